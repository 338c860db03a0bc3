package systemd

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Message
	}{
		{"ready", "READY=1", Message{Ready: true}},
		{"ready newline", "READY=1\n", Message{Ready: true}},
		{"blank lines", "\n\nREADY=1\n\n", Message{Ready: true}},
		{"watchdog", "WATCHDOG=1", Message{Watchdog: true}},
		{"watchdog trigger", "WATCHDOG=trigger", Message{WatchdogTrigger: true}},
		{"watchdog other", "WATCHDOG=0", Message{}},
		{"ready 0", "READY=0", Message{}},
		{"ready not exactly 1", "READY=1 ", Message{}},
		{"ready crlf", "READY=1\r\n", Message{}},
		{"ready yes", "READY=yes", Message{}},
		{"stopping", "STOPPING=1", Message{Stopping: true}},
		{"reloading is ignored", "RELOADING=1\nMONOTONIC_USEC=123", Message{}},
		{"status", "STATUS=serving 10 rps", Message{Status: "serving 10 rps", HasStatus: true}},
		{"empty status", "STATUS=", Message{HasStatus: true}},
		{"status with =", "STATUS=a=b=c", Message{Status: "a=b=c", HasStatus: true}},
		{"status utf8", "STATUS=héllo ✓", Message{Status: "héllo ✓", HasStatus: true}},
		{"last status wins", "STATUS=a\nSTATUS=b", Message{Status: "b", HasStatus: true}},
		{"last ready wins", "READY=1\nREADY=0", Message{}},
		{"all", "READY=1\nSTATUS=up\nSTOPPING=1\nRELOADING=1", Message{Ready: true, Stopping: true, Status: "up", HasStatus: true}},
		{"unknown ignored", "MAINPID=42\nX_CUSTOM=ok\nERRNO=2", Message{}},
		{"keys are case sensitive", "ready=1\nStatus=x", Message{}},
		{"leading space is another key", " READY=1", Message{}},
		{"empty value", "READY=", Message{}},
		{"status at limit", "STATUS=" + strings.Repeat("s", maxMessage-7), Message{Status: strings.Repeat("s", maxMessage-7), HasStatus: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMessage([]byte(tt.in))
			if err != nil {
				t.Fatalf("parseMessage(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("parseMessage(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseMessageRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"empty", "", "empty"},
		{"too large", "STATUS=" + strings.Repeat("s", maxMessage-6), "exceeds"},
		{"far too large", strings.Repeat("READY=1\n", 1000), "exceeds"},
		{"NUL", "READY=1\x00", "NUL"},
		{"NUL in status", "STATUS=a\x00b", "NUL"},
		{"invalid UTF-8", "STATUS=\xff\xfe", "UTF-8"},
		{"truncated UTF-8", "STATUS=\xe2\x9c", "UTF-8"},
		{"no =", "READY", "not VARIABLE=VALUE"},
		{"no = after a good line", "READY=1\nhello", "not VARIABLE=VALUE"},
		{"empty key", "=1", "not VARIABLE=VALUE"},
		{"only newlines and junk", "\n\njunk\n", "not VARIABLE=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMessage([]byte(tt.in))
			if err == nil {
				t.Fatalf("parseMessage(%q) = %+v, want an error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			// A rejected datagram must not count as READY=1 by accident.
			if got != (Message{}) {
				t.Errorf("parseMessage(%q) returned %+v with its error, want zero", tt.in, got)
			}
		})
	}
}

func TestParseMessageErrorIsShort(t *testing.T) {
	_, err := parseMessage([]byte(strings.Repeat("x", 1000)))
	if err == nil {
		t.Fatal("want an error")
	}
	if len(err.Error()) > 100 {
		t.Errorf("error quotes the whole line: %d bytes", len(err.Error()))
	}
}

func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		"READY=1",
		"READY=1\nSTATUS=up\n",
		"STOPPING=1\nSTATUS=draining",
		"RELOADING=1\nMONOTONIC_USEC=1",
		"STATUS=",
		"STATUS=a=b",
		"\n\n",
		"=",
		"READY",
		"READY=1\x00",
		"STATUS=\xff",
		"STATUS=" + strings.Repeat("é", 2100),
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		m, err := parseMessage(b)
		if !bytes.Equal(in, b) {
			t.Fatal("parseMessage modified its input")
		}
		if err != nil {
			if m != (Message{}) {
				t.Fatalf("parseMessage(%q) = %+v with error %v", b, m, err)
			}
			return
		}
		if len(b) == 0 || len(b) > maxMessage || bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b) {
			t.Fatalf("parseMessage accepted %q", b)
		}
		lines := strings.Split(string(b), "\n")
		var (
			ready, hasStatus bool
			status           string
		)
		for _, l := range lines {
			if l == "" {
				continue
			}
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				t.Fatalf("parseMessage(%q) accepted line %q", b, l)
			}
			switch k {
			case "READY":
				ready = v == "1"
			case "STATUS":
				status, hasStatus = v, true
			}
		}
		if m.Ready != ready || m.HasStatus != hasStatus || m.Status != status {
			t.Fatalf("parseMessage(%q) = %+v; want Ready=%v Status=%q HasStatus=%v", b, m, ready, status, hasStatus)
		}
		if !m.HasStatus && m.Status != "" {
			t.Fatalf("parseMessage(%q): Status without HasStatus", b)
		}
	})
}
