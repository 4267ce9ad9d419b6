/*
 * fconn.h - the FastCGI connections of the request threads: the listener
 * and the kept connections (FCGI_KEEP_CONN, nginx's fastcgi_keep_conn)
 * parked between requests. A request thread asks for the next connection
 * that has a request to read; it never waits on one that has none.
 */
#ifndef SIG_FCONN_H
#define SIG_FCONN_H

/* What fconn_next found. */
enum {
	FCONN_INTR = -1, /* a signal came (web_stop's), or a wait that may not block found nothing */
	FCONN_NONE = -2, /* nowait: nothing is ready at all */
};

/* Take listen_fd (made non-blocking) and at most max_parked idle kept
 * connections. Call once, before the request threads start. Returns 0, or
 * -1 (logged). */
int fconn_start(int listen_fd, int max_parked);

/* The next connection with bytes to read: a new one from the listener or a
 * parked one that became readable. Blocks until there is one, or returns
 * at once when nowait. Connections closed by the web server while parked
 * are closed here on the way. Returns the fd (blocking; the caller owns it
 * until it hands it back with fconn_park or closes it), FCONN_INTR, or
 * FCONN_NONE. Thread-safe: each connection goes to one thread only. */
int fconn_next(int nowait);

/* After a complete response on a kept connection: park fd until its next
 * request arrives. Over the cap it is closed instead (counted). Thread-safe,
 * never blocks. */
void fconn_park(int fd);
/* The same for a connection whose held response (SSE, long-poll) ended on
 * the loop: its socket is made blocking again first. */
void fconn_give_back(int fd);

/* The end of a drain, by the last request thread: close every parked
 * connection; one that has a request waiting is given to serve(fd, arg)
 * first (which must close it). Returns how many were closed idle. */
int fconn_close_parked(void (*serve)(int fd, void *arg), void *arg);

/* Idle kept connections parked right now. */
int fconn_parked(void);

#endif
