/* A worker written against libsystemd, as a C service for socket
 * activation would be: it takes its sockets with sd_listen_fds_with_names
 * (which checks LISTEN_PID against its own pid), reports READY=1 with
 * sd_notify, and answers each connection with what it was given. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

int main(void) {
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 1) {
		fprintf(stderr, "sdlisten: sd_listen_fds_with_names: %d\n", n);
		return 1;
	}
	char body[512];
	int len = snprintf(body, sizeof body, "pid=%d fds=%d names=", (int)getpid(), n);
	for (int i = 0; i < n; i++)
		len += snprintf(body + len, sizeof body - len, "%s%s", i ? ":" : "", names[i]);
	len += snprintf(body + len, sizeof body - len, " slot=%s\n", getenv("HANDOFF_WORKER"));
	char resp[1024];
	int rlen = snprintf(resp, sizeof resp,
		"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len, body);
	sd_notifyf(0, "READY=1\nSTATUS=libsystemd saw %d fds", n);
	for (;;) {
		struct pollfd p = {.fd = SD_LISTEN_FDS_START, .events = POLLIN};
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			return 1;
		int c = accept(SD_LISTEN_FDS_START, NULL, NULL);
		if (c < 0)
			continue; /* EAGAIN: another worker won */
		char buf[2048];
		ssize_t got = 0, r;
		while (got < (ssize_t)sizeof buf - 1 && (r = read(c, buf + got, sizeof buf - 1 - got)) > 0) {
			got += r;
			buf[got] = 0;
			if (strstr(buf, "\r\n\r\n"))
				break;
		}
		write(c, resp, rlen);
		close(c);
	}
}
