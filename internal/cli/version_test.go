package cli

import (
	"runtime/debug"
	"testing"
)

func TestBuildVersion(t *testing.T) {
	t.Parallel()
	mk := func(v string, kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{Main: debug.Module{Version: v}}
		for i := 0; i < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	for _, c := range []struct {
		bi   *debug.BuildInfo
		want string
	}{
		{mk("v1.2.3"), "v1.2.3"},
		{mk("(devel)"), "devel (no version control information)"},
		{mk("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "true"), "devel (rev 0123456789ab, modified)"},
		{mk("(devel)", "vcs.revision", "0123456789abcdef0123", "vcs.modified", "false"), "devel (rev 0123456789ab)"},
		{mk("v0.0.0-20260101000000-0123456789ab+dirty", "vcs.revision", "0123456789abcdef0123"), "v0.0.0-20260101000000-0123456789ab+dirty"},
		{mk("v1.2.3", "vcs.revision", "fedcba9876543210"), "v1.2.3 (rev fedcba987654)"},
	} {
		if got := BuildVersion(c.bi); got != c.want {
			t.Errorf("BuildVersion(%+v) = %q, want %q", c.bi, got, c.want)
		}
	}
}
