/*
 * loadgen.c — insertbench's HTTP/1.1 load generator.
 *
 * Why our own: every request carries a distinct text, every returned id is recorded so the harness can
 * verify the database row by row, window boundaries are quiescent (nothing in flight when the parent
 * snapshots CPU counters), and the generator reports its own CPU time. It has to stay cheap: the fastest
 * server cell answers ~40,000 requests/s on one core, and this runs on the other one.
 *
 * Design: one thread, Linux epoll (level-triggered), C keep-alive connections, one request in flight per
 * connection, one send() per request, one read() per readable event when the response fits; connects are
 * non-blocking too, so a server slow to accept one connection never stalls the others. Closed loop
 * by default; --rate R runs an open loop (request i scheduled at t0 + i/R, latency measured from that
 * time, so a slow server cannot hide its queue: coordinated omission corrected). A timerfd wakes the
 * loop for the schedule, the end of a phase and the 50 ms tick that enforces per-request timeouts.
 *
 * Protocol with the parent (stdin/stdout):
 *   connect C connections (failure: stderr, exit 2) → warm-up for --warmup s → drain → "WARM"
 *   read a line: "GO" → measured window for --duration s → drain → "DONE"; EOF or "STOP" → exit 0
 *   (with --requests N the measured window is exactly N requests instead, whatever --duration says:
 *   closed loop at the concurrency, or N scheduled at --rate; the warm-up stays --warmup seconds)
 *   write --out, print one JSON summary line, exit 0.
 * Out file, one line per completed request: "<k> <w|m> <status> <latency_us> <ids>"; status 0 means a
 * connection error, timeout or unparseable response; ids is "-" or comma-separated ("id" or "ids" of a
 * 2xx JSON body). Latency percentiles in the summary cover measured responses with a status (not 0).
 * --body template --template FILE sends a user's request instead of insertbench's: FILE holds the request
 * line and headers, an empty line, then the body (no Host, no Content-Length: those are added), and every
 * "{n}" in it becomes --n-base + k, a number unique to each request; ids are not looked for (always "-").
 * --error-out FILE receives the first response that is not 2xx: its status on one line, then its body
 * (at most ERROR_BODY bytes), so the parent can say why a request failed.
 * Responses are parsed strictly where leniency would misread them (RFC 9112): a Content-Length that is not
 * all digits, or two that disagree, or a response over MAX_RESPONSE bytes fails its request (status 0) and
 * closes the connection. Bad numbers on the command line are refused in one line (exit 2). The process
 * dies with its parent (PR_SET_PDEATHSIG; --parent PID closes the race with a parent that died first).
 *
 * Build: cc -O2 -std=gnu11 -o loadgen loadgen.c   (libc only)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <math.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 50000000LL      /* timeout checks and reconnect attempts */
#define LATE_NS 1000000LL       /* rate mode: issued more than 1 ms late */
#define MAX_HEADER 65536
#define MAX_RESPONSE (1 << 20)  /* headers and body of one response */
#define SECONDS_MAX 1e6         /* --duration, --warmup, --timeout */
#define RATE_MAX 1e7
#define MAX_EVENTS 256
#define ERROR_BODY 4096        /* bytes of the first non-2xx body kept for --error-out */
#define MAX_TEMPLATE 65536
#define OUTBUF_SIZE (1 << 20)
#define TAG_TIMER UINT32_MAX
#define TAG_STDIN (UINT32_MAX - 1)

/* ---------------------------------------------------------------- options and state */

enum body_kind { BODY_TEXT, BODY_TEXTS, BODY_QUERY, BODY_TEMPLATE };
enum conn_state { IDLE, BUSY, CONNECTING, DEAD };

static struct {
    const char *host, *method, *path, *prefix, *out, *sum_field, *template, *error_out;
    enum body_kind body;
    int port, inserts, concurrency, parent;
    uint64_t requests;          /* > 0: the measured window issues exactly this many requests */
    uint64_t n_base;            /* --body template: "{n}" is n_base + k */
    double rate, warmup, duration, timeout;
} opt = {.host = "127.0.0.1", .method = "POST", .path = "/items", .prefix = "r", .inserts = 1,
         .concurrency = 64, .timeout = 10.0};

typedef struct {
    int fd, want_out;
    enum conn_state state;
    char phase;                 /* 'w' or 'm': the phase the in-flight request was issued in */
    uint64_t k;
    int64_t t_sched, t_sent;    /* latency counts from t_sched, the timeout from t_sent (or the connect's start) */
    char *wbuf; size_t whead, wlen, woff;   /* wbuf[0, whead) is the fixed request head */
    char *rbuf; size_t rlen, rcap;
} conn_t;

static conn_t *conns;
static int *idle, nidle;        /* stack of connections ready for a request */
static int inflight, ep, timer_fd, connect_errno;   /* connect_errno: the last failed connect's */
static int64_t timer_armed = -1, timeout_ns;
static struct sockaddr_storage addr;
static socklen_t addr_len;
static char host_header[80], *scratch, sum_key[130];
static size_t sum_key_len;
static uint64_t next_k;
static char *tpl_head, *tpl_body;   /* --body template: the request head (request line and headers, each ending
                                       in CRLF) and the body, "{n}" still in them */
static size_t tpl_head_len, tpl_body_len, tpl_slots;  /* tpl_slots: how many "{n}" in both */
static int tpl_sized, error_written;                /* tpl_sized: send Content-Length even for an empty body */

static struct {                 /* measured-window statistics */
    uint64_t requests, warmup_requests, late, unsent, sum_count;
    uint64_t status_counts[1000];
    uint32_t *lat; size_t nlat, caplat;
    double sum;
} st;

static char outbuf[OUTBUF_SIZE];
static size_t outlen;
static int out_fd;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static char *put_u64(char *p, uint64_t v) {
    char t[24];
    int n = 0;
    do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = t[--n];
    return p;
}

static char *put_str(char *p, const char *s) {
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

/* ---------------------------------------------------------------- output file */

static void out_flush(void) {
    size_t off = 0;
    while (off < outlen) {
        ssize_t n = write(out_fd, outbuf + off, outlen - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("cannot write the out file: %s", strerror(errno));
        off += (size_t)n;
    }
    outlen = 0;
}

static char *out_reserve(size_t n) {
    if (outlen + n > OUTBUF_SIZE) out_flush();
    return outbuf + outlen;
}

static void out_put(const char *p, size_t n) {
    memcpy(out_reserve(n), p, n);
    outlen += n;
}

/* ---------------------------------------------------------------- connections */

static void watch(int fd, uint32_t tag, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = tag};
    if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
}

static void idle_push(conn_t *c) {
    c->state = IDLE;
    idle[nidle++] = (int)(c - conns);
}

static void idle_remove(conn_t *c) {
    for (int i = 0; i < nidle; i++)
        if (idle[i] == (int)(c - conns)) { idle[i] = idle[--nidle]; return; }
}

/* A connect failed (errno `err`): the connection stays DEAD until the next tick tries again. */
static void connect_failed(conn_t *c, int err) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = DEAD;
    connect_errno = err;
}

/* Start a non-blocking connect: the connection is IDLE at once, CONNECTING until epoll says it is writable
   (then `connected`), or DEAD. */
static void start_connect(conn_t *c) {
    int one = 1, tag = (int)(c - conns);
    c->rlen = 0;
    c->want_out = 0;
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { connect_failed(c, errno); return; }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, addr_len) == 0) {
        watch(c->fd, (uint32_t)tag, EPOLLIN, EPOLL_CTL_ADD);
        idle_push(c);
    } else if (errno == EINPROGRESS) {
        watch(c->fd, (uint32_t)tag, EPOLLOUT, EPOLL_CTL_ADD);
        c->state = CONNECTING;
        c->t_sent = now_ns();
    } else {
        connect_failed(c, errno);
    }
}

/* epoll reported a CONNECTING socket writable (or in error): SO_ERROR says which. */
static void connected(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) { connect_failed(c, err); return; }
    watch(c->fd, (uint32_t)(c - conns), EPOLLIN, EPOLL_CTL_MOD);
    idle_push(c);
}

/* Drop the socket and connect again. */
static void reopen(conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    if (c->state == IDLE) idle_remove(c);
    start_connect(c);
}

/* ---------------------------------------------------------------- requests */

/* Fill wbuf[whead, wlen) with request k: the text(s) <prefix>-<k>[-<j>], or the query string. */
/* Copy s[0, n) to p with every "{n}" replaced by v; return the end. */
static char *expand(char *p, const char *s, size_t n, uint64_t v) {
    for (const char *end = s + n; s < end;) {
        const char *hit = memmem(s, (size_t)(end - s), "{n}", 3);
        size_t run = hit ? (size_t)(hit - s) : (size_t)(end - s);
        memcpy(p, s, run);
        p += run;
        s += run;
        if (hit) { p = put_u64(p, v); s += 3; }
    }
    return p;
}

static void build_request(conn_t *c, uint64_t k) {
    char *p = c->wbuf + c->whead;
    if (opt.body == BODY_TEMPLATE) {
        char *b = expand(scratch, tpl_body, tpl_body_len, opt.n_base + k);
        p = expand(p, tpl_head, tpl_head_len, opt.n_base + k);
        p = put_str(p, host_header);
        if (b > scratch || tpl_sized) {
            p = put_str(p, "Content-Length: ");
            p = put_u64(p, (uint64_t)(b - scratch));
            p = put_str(p, "\r\n");
        }
        p = put_str(p, "\r\n");
        memcpy(p, scratch, (size_t)(b - scratch));
        p += b - scratch;
    } else if (opt.body == BODY_QUERY) {
        p = put_u64(p, k);
        p = put_str(p, " HTTP/1.1\r\n");
        p = put_str(p, host_header);
        p = put_str(p, "\r\n");
    } else {
        char *b = scratch;
        if (opt.body == BODY_TEXT) {
            b = put_str(b, "{\"text\":\"");
            b = put_str(b, opt.prefix);
            *b++ = '-';
            b = put_u64(b, k);
            b = put_str(b, "\"}");
        } else {
            b = put_str(b, "{\"texts\":[");
            for (int j = 0; j < opt.inserts; j++) {
                if (j) *b++ = ',';
                *b++ = '"';
                b = put_str(b, opt.prefix);
                *b++ = '-';
                b = put_u64(b, k);
                *b++ = '-';
                b = put_u64(b, (uint64_t)j);
                *b++ = '"';
            }
            b = put_str(b, "]}");
        }
        p = put_u64(p, (uint64_t)(b - scratch));
        p = put_str(p, "\r\n\r\n");
        memcpy(p, scratch, (size_t)(b - scratch));
        p += b - scratch;
    }
    c->wlen = (size_t)(p - c->wbuf);
}

static void conn_fail(conn_t *c);

static void flush_write(conn_t *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) { c->woff += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) watch(c->fd, (uint32_t)(c - conns), EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            c->want_out = 1;
            return;
        }
        conn_fail(c);
        return;
    }
    if (c->want_out) watch(c->fd, (uint32_t)(c - conns), EPOLLIN, EPOLL_CTL_MOD);
    c->want_out = 0;
}

static void issue(conn_t *c, char phase, int64_t sched) {
    c->state = BUSY;
    c->phase = phase;
    c->k = next_k++;
    c->t_sched = sched ? sched : now_ns();
    c->t_sent = sched ? now_ns() : c->t_sched;
    c->woff = 0;
    inflight++;
    build_request(c, c->k);
    flush_write(c);
}

/* ---------------------------------------------------------------- response parsing */

typedef struct { int status, close; char *body; size_t blen, used; } resp_t;

/* Walk a chunked body: returns 1 and sets *blen and *used when complete (decoding in place if `decode`),
   0 when more bytes are needed, -1 when malformed. */
static int dechunk(char *buf, size_t n, int decode, size_t *blen, size_t *used) {
    size_t in = 0, out = 0;
    for (;;) {
        char *nl = memchr(buf + in, '\n', n - in);
        if (!nl) return n - in > 1024 ? -1 : 0;
        size_t size = 0, digits = 0, line_end = (size_t)(nl - buf) + 1;
        for (char *p = buf + in; p < nl; p++, digits++) {
            int v = (*p >= '0' && *p <= '9') ? *p - '0' : (*p | 32) >= 'a' && (*p | 32) <= 'f' ? (*p | 32) - 'a' + 10 : -1;
            if (v < 0) break;
            if (digits == 15) return -1;
            size = size * 16 + (size_t)v;
        }
        if (!digits) return -1;
        if (size == 0) {        /* last chunk: skip trailers up to the empty line */
            size_t p = line_end;
            for (;;) {
                char *e = memchr(buf + p, '\n', n - p);
                if (!e) return n - p > MAX_HEADER ? -1 : 0;
                size_t l = (size_t)(e - (buf + p));
                p = (size_t)(e - buf) + 1;
                if (l == 0 || (l == 1 && buf[p - 2] == '\r')) { *blen = out; *used = p; return 1; }
            }
        }
        if (n - line_end < size + 2) return 0;
        if (decode) memmove(buf + out, buf + line_end, size);
        out += size;
        in = line_end + size + 2;
    }
}

static int header_is(const char *line, size_t len, const char *name, const char **value, size_t *vlen) {
    size_t n = strlen(name);
    if (len < n || strncasecmp(line, name, n)) return 0;
    *value = line + n;
    *vlen = len - n;
    return 1;
}

static int has_token(const char *p, size_t n, const char *tok) {
    size_t t = strlen(tok);
    for (size_t i = 0; i + t <= n; i++)
        if (!strncasecmp(p + i, tok, t)) return 1;
    return 0;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* A Content-Length value (RFC 9110 8.6): 1*DIGIT, or a list of equal ones ("12, 12"), with optional
   whitespace around each; -1 when anything else is there, or when the number is beyond MAX_RESPONSE. */
static long long content_length(const char *v, size_t n) {
    long long value = -1;
    size_t i = 0;
    for (;;) {
        while (i < n && is_ows(v[i])) i++;
        long long x = 0;
        size_t start = i;
        for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
            if (x > MAX_RESPONSE) return -1;    /* and no overflow, however many digits */
            x = x * 10 + (v[i] - '0');
        }
        if (i == start || (value >= 0 && x != value)) return -1;
        value = x;
        while (i < n && is_ows(v[i])) i++;
        if (i == n) return value;
        if (v[i++] != ',') return -1;
    }
}

/* 1: a whole response is at buf (r filled), 0: need more bytes, -1: malformed or over MAX_RESPONSE. */
static int parse_response(char *buf, size_t len, int eof, resp_t *r) {
    size_t off = 0;
    for (;;) {
        char *h = buf + off;
        size_t hl = len - off;
        char *he = memmem(h, hl, "\r\n\r\n", 4);
        if (!he) return (eof || hl > MAX_HEADER) ? -1 : 0;
        if (hl < 12 || memcmp(h, "HTTP/1.", 7) || h[9] < '0' || h[9] > '9' || h[10] < '0' ||
            h[10] > '9' || h[11] < '0' || h[11] > '9')
            return -1;
        int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
        size_t hdr_len = (size_t)(he - h) + 4;
        long long clen = -1;
        int chunked = 0;
        r->close = h[7] == '0';                         /* HTTP/1.0 closes unless told otherwise */
        for (char *line = (char *)memchr(h, '\n', hdr_len) + 1; line < he + 2;) {
            char *eol = memchr(line, '\n', (size_t)(he + 2 - line));
            size_t ll = (size_t)(eol - line) - (eol > line && eol[-1] == '\r');
            const char *v;
            size_t vl;
            if (header_is(line, ll, "content-length:", &v, &vl)) {
                long long n = content_length(v, vl);
                if (n < 0 || (clen >= 0 && n != clen)) return -1;      /* two lengths must agree */
                clen = n;
            } else if (header_is(line, ll, "transfer-encoding:", &v, &vl)) {
                chunked = has_token(v, vl, "chunked");
            } else if (header_is(line, ll, "connection:", &v, &vl)) {
                if (has_token(v, vl, "close")) r->close = 1;
                else if (has_token(v, vl, "keep-alive")) r->close = 0;
            }
            line = eol + 1;
        }
        if (status >= 100 && status < 200 && status != 101) { off += hdr_len; continue; }  /* interim */
        r->status = status;
        r->body = h + hdr_len;
        size_t avail = hl - hdr_len, used;
        if (status == 204 || status == 304) {
            r->blen = used = 0;
        } else if (chunked) {
            int rc = dechunk(r->body, avail, 0, &r->blen, &used);
            if (rc <= 0) return (rc < 0 || eof) ? -1 : 0;
            dechunk(r->body, avail, 1, &r->blen, &used);
        } else if (clen >= 0) {
            if (off + hdr_len + (size_t)clen > MAX_RESPONSE) return -1;
            if (avail < (size_t)clen) return eof ? -1 : 0;
            r->blen = used = (size_t)clen;
        } else {                                        /* no length: the body ends at EOF */
            if (!eof) return 0;
            r->blen = used = avail;
            r->close = 1;
        }
        r->used = off + hdr_len + used;
        return 1;
    }
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Pointer just past `"key":` (whitespace allowed around the colon), or NULL. */
static const char *find_key(const char *b, size_t n, const char *key, size_t klen) {
    const char *p = b, *end = b + n;
    while (p < end && (p = memmem(p, (size_t)(end - p), key, klen))) {
        const char *q = p + klen;
        while (q < end && is_space(*q)) q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && is_space(*q)) q++;
            return q;
        }
        p++;
    }
    return NULL;
}

/* Append the ids of a 2xx body to the out buffer as "1,2,3" (digits copied verbatim), or "-". */
static void put_ids(const char *body, size_t n) {
    const char *end = body + n, *p = find_key(body, n, "\"ids\"", 5);
    int bulk = p && p < end && *p == '[', count = 0;
    if (bulk) p++;
    else p = find_key(body, n, "\"id\"", 4);
    while (p && p < end) {
        while (p < end && is_space(*p)) p++;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == d || p - d > 20) break;
        if (count++) out_put(",", 1);
        out_put(d, (size_t)(p - d));
        if (!bulk) break;
        while (p < end && is_space(*p)) p++;
        if (p >= end || *p != ',') break;
        p++;
    }
    if (!count) out_put("-", 1);
}

static void add_sum_field(const char *body, size_t n) {
    const char *p = find_key(body, n, sum_key, sum_key_len), *end = body + n;
    if (!p) return;
    char num[64];
    size_t l = 0;
    while (p + l < end && l < sizeof num - 1 && p[l] && strchr("0123456789+-.eE", p[l])) num[l] = p[l], l++;
    num[l] = 0;
    char *e;
    double v = strtod(num, &e);
    if (e == num) return;
    st.sum += v;
    st.sum_count++;
}

/* ---------------------------------------------------------------- completion */

/* --error-out: the first non-2xx response's status and (the start of) its body, written once. */
static void write_error(int status, const char *body, size_t blen) {
    error_written = 1;
    FILE *f = fopen(opt.error_out, "we");
    if (!f) die("cannot open the error file: %s", strerror(errno));
    fprintf(f, "%d\n", status);
    fwrite(body, 1, blen < ERROR_BODY ? blen : ERROR_BODY, f);
    if (fclose(f)) die("cannot write the error file: %s", strerror(errno));
}

/* Record a completed request (status 0: failed) and put the connection back in the idle stack. */
static void finish(conn_t *c, int status, const char *body, size_t blen) {
    int64_t lat_ns = now_ns() - c->t_sched;
    uint64_t lat_us = lat_ns > 0 ? (uint64_t)lat_ns / 1000 : 0;
    char *o = out_reserve(64), *p = o;
    p = put_u64(p, c->k);
    *p++ = ' ';
    *p++ = c->phase;
    *p++ = ' ';
    p = put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = put_u64(p, lat_us);
    *p++ = ' ';
    outlen += (size_t)(p - o);
    int ok = status >= 200 && status < 300;
    if (ok && opt.body != BODY_TEMPLATE) put_ids(body, blen);
    else out_put("-", 1);
    if (!ok && status && opt.error_out && !error_written) write_error(status, body, blen);
    out_put("\n", 1);
    if (c->phase == 'm') {
        st.requests++;
        st.status_counts[status < 1000 ? status : 0]++;
        if (status) {
            if (st.nlat == st.caplat) {
                st.caplat = st.caplat ? st.caplat * 2 : 65536;
                st.lat = realloc(st.lat, st.caplat * sizeof *st.lat);
                if (!st.lat) die("%s", "out of memory");
            }
            st.lat[st.nlat++] = lat_us > UINT32_MAX ? UINT32_MAX : (uint32_t)lat_us;
        }
        if (ok && opt.sum_field) add_sum_field(body, blen);
    } else {
        st.warmup_requests++;
    }
    inflight--;
    idle_push(c);
}

/* The connection broke: fail the request in flight, if any, and connect again. */
static void conn_fail(conn_t *c) {
    if (c->state == BUSY) finish(c, 0, NULL, 0);
    reopen(c);
}

static void try_complete(conn_t *c, int eof) {
    if (c->state != BUSY) {     /* bytes or EOF on an idle connection: drop them, reconnect on EOF */
        c->rlen = 0;
        if (eof) reopen(c);
        return;
    }
    resp_t r;
    int rc = parse_response(c->rbuf, c->rlen, eof, &r);
    if (rc == 0 && c->rlen < MAX_RESPONSE) return;
    if (rc <= 0) { conn_fail(c); return; }             /* malformed, or more than MAX_RESPONSE bytes */
    finish(c, r.status, r.body, r.blen);
    memmove(c->rbuf, c->rbuf + r.used, c->rlen - r.used);
    c->rlen -= r.used;
    if (r.close || eof || c->woff < c->wlen) reopen(c);   /* answered before it read all we sent */
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->rcap - c->rlen < 4096 && c->rcap < MAX_RESPONSE) {
            c->rcap = c->rcap * 2 < MAX_RESPONSE ? c->rcap * 2 : MAX_RESPONSE;
            if (!(c->rbuf = realloc(c->rbuf, c->rcap))) die("%s", "out of memory");
        }
        size_t room = c->rcap - c->rlen;
        if (!room) break;                       /* full: try_complete ends the response or refuses it */
        ssize_t n = read(c->fd, c->rbuf + c->rlen, room);
        if (n > 0) {
            c->rlen += (size_t)n;
            if ((size_t)n < room) break;       /* drained what was there; epoll tells us of more */
            continue;
        }
        if (n == 0) { try_complete(c, 1); return; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        conn_fail(c);
        return;
    }
    try_complete(c, 0);
}

/* ---------------------------------------------------------------- event loop */

static void arm_timer(int64_t deadline) {
    if (deadline == timer_armed) return;
    struct itimerspec its = {.it_value = {.tv_sec = deadline / 1000000000LL, .tv_nsec = deadline % 1000000000LL}};
    timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
    timer_armed = deadline;
}

static char stdin_line[64];
static size_t stdin_len;
static int go_received;

/* Consume what is on stdin: "GO" starts the window; EOF or "STOP" ends the process. */
static void on_stdin(void) {
    ssize_t n = read(0, stdin_line + stdin_len, sizeof stdin_line - 1 - stdin_len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) exit(0);
    stdin_len += (size_t)n;
    char *nl = memchr(stdin_line, '\n', stdin_len);
    if (!nl) {
        if (stdin_len == sizeof stdin_line - 1) die("%s", "unexpected input on stdin");
        return;
    }
    *nl = 0;
    if (nl > stdin_line && nl[-1] == '\r') nl[-1] = 0;
    if (!strcmp(stdin_line, "GO")) go_received = 1;
    else if (!strcmp(stdin_line, "STOP")) exit(0);
    else die("expected GO or STOP on stdin, got '%s'", stdin_line);
}

static void handle_events(int timeout_ms) {
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        uint32_t tag = evs[i].data.u32;
        if (tag == TAG_TIMER) {
            uint64_t expirations;
            if (read(timer_fd, &expirations, sizeof expirations) < 0) { /* spurious: nothing to clear */ }
            timer_armed = -1;
            continue;
        }
        if (tag == TAG_STDIN) { on_stdin(); continue; }
        conn_t *c = &conns[tag];
        if (c->fd < 0) continue;
        if (c->state == CONNECTING) { connected(c); continue; }
        if ((evs[i].events & EPOLLOUT) && c->state == BUSY && c->want_out) flush_write(c);
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR) && c->fd >= 0) on_readable(c);
    }
}

static void tick(int64_t now) {
    for (int i = 0; i < opt.concurrency; i++) {
        conn_t *c = &conns[i];
        if (c->state == BUSY && now - c->t_sent > timeout_ns) conn_fail(c);
        else if (c->state == CONNECTING && now - c->t_sent > timeout_ns) connect_failed(c, ETIMEDOUT);
        else if (c->state == DEAD) start_connect(c);
    }
}

/* Issue load for `seconds`, or exactly `count` requests when count > 0 (then `seconds` is not an end),
   then stop issuing and wait for every request in flight (the drain). */
static void run_phase(char phase, double seconds, uint64_t count) {
    int64_t t0 = now_ns(), end = count ? INT64_MAX : t0 + (int64_t)(seconds * 1e9), next_tick = t0 + TICK_NS;
    double interval = opt.rate > 0 ? 1e9 / opt.rate : 0;
    uint64_t i = 0;             /* requests issued in this phase */
    int issuing = count ? 1 : seconds > 0;
    for (;;) {
        int64_t now = now_ns();
        if (issuing && count && i >= count) issuing = 0;
        if (issuing && now >= end) {
            issuing = 0;
            if (opt.rate > 0 && phase == 'm') {
                double due = seconds * opt.rate;
                uint64_t total = (uint64_t)due + ((double)(uint64_t)due < due);
                st.unsent = total > i ? total - i : 0;
            }
        }
        if (now >= next_tick) { tick(now); next_tick = now + TICK_NS; }
        int64_t sched = t0 + (int64_t)((double)i * interval);
        while (issuing && nidle > 0 && (!count || i < count)) {
            if (opt.rate > 0) {
                if (sched > now || sched >= end) break;
                if (phase == 'm' && now - sched > LATE_NS) st.late++;
            }
            issue(&conns[idle[--nidle]], phase, opt.rate > 0 ? sched : 0);
            sched = t0 + (int64_t)((double)++i * interval);
        }
        if (count && i >= count) issuing = 0;
        if (!issuing && inflight == 0) return;
        int64_t deadline = next_tick;
        if (issuing && end < deadline) deadline = end;
        if (issuing && opt.rate > 0 && nidle > 0 && sched < deadline) deadline = sched;
        arm_timer(deadline);
        handle_events(-1);
    }
}

/* ---------------------------------------------------------------- setup and summary */

/* A whole decimal number min..max, or die naming --`flag`. */
static uint64_t parse_count(const char *flag, const char *s, uint64_t min, uint64_t max) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno || strchr(s, '-') || v < min || v > max)
        die("--%s must be %llu-%llu, got '%s'", flag, (unsigned long long)min, (unsigned long long)max, s);
    return (uint64_t)v;
}

/* A finite number above 0 (or 0 too, when `zero_ok`) up to max, or die naming --`flag` and its unit. */
static double parse_real(const char *flag, const char *s, int zero_ok, double max, const char *unit) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < 0 || (v == 0 && !zero_ok) || v > max)
        die("--%s must be a number of %s %s 0 up to %g, got '%s'", flag, unit, zero_ok ? "from" : "above", max, s);
    return v;
}

/* --template FILE: "<METHOD> /<target> HTTP/1.1" CRLF, headers each ending in CRLF, CRLF, body. */
static void read_template(void) {
    static char buf[MAX_TEMPLATE + 1];
    int fd = open(opt.template, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open --template %s: %s", opt.template, strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0 || n > MAX_TEMPLATE) die("--template must be a readable file of at most %d bytes", MAX_TEMPLATE);
    char *end = memmem(buf, (size_t)n, "\r\n\r\n", 4), *sp = memchr(buf, ' ', (size_t)n);
    size_t method_len = sp ? (size_t)(sp - buf) : 0;
    if (!end || !method_len || method_len > 16 || strspn(buf, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != method_len ||
        sp[1] != '/' || memchr(buf, '\0', (size_t)n))
        die("%s", "--template must start with a request line like 'POST /path HTTP/1.1' and hold an empty line");
    tpl_head = buf;
    tpl_head_len = (size_t)(end - buf) + 2;
    tpl_body = end + 4;
    tpl_body_len = (size_t)(buf + n - tpl_body);
    for (char *p = buf; (p = memmem(p, (size_t)(buf + n - p), "{n}", 3)); p += 3) tpl_slots++;
    tpl_sized = strncmp(buf, "GET ", 4) && strncmp(buf, "HEAD ", 5) && strncmp(buf, "DELETE ", 7);
}

static void parse_args(int argc, char **argv) {
    static const struct option longopts[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"method", 1, 0, 'm'}, {"path", 1, 0, 'P'},
        {"body", 1, 0, 'b'}, {"inserts", 1, 0, 'n'}, {"concurrency", 1, 0, 'c'}, {"rate", 1, 0, 'r'},
        {"warmup", 1, 0, 'w'}, {"duration", 1, 0, 'd'}, {"prefix", 1, 0, 'x'}, {"out", 1, 0, 'o'},
        {"sum-field", 1, 0, 's'}, {"timeout", 1, 0, 't'}, {"requests", 1, 0, 'N'},
        {"parent", 1, 0, 'A'}, {"template", 1, 0, 'T'}, {"n-base", 1, 0, 'B'}, {"error-out", 1, 0, 'E'},
        {0, 0, 0, 0}};
    const char *body = "text", *duration = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = (int)parse_count("port", optarg, 1, 65535); break;
        case 'm': opt.method = optarg; break;
        case 'P': opt.path = optarg; break;
        case 'b': body = optarg; break;
        case 'n': opt.inserts = (int)parse_count("inserts", optarg, 1, 1000); break;
        case 'c': opt.concurrency = (int)parse_count("concurrency", optarg, 1, 10000); break;
        case 'r': opt.rate = parse_real("rate", optarg, 1, RATE_MAX, "requests/s (0: a closed loop)"); break;
        case 'w': opt.warmup = parse_real("warmup", optarg, 1, SECONDS_MAX, "seconds"); break;
        case 'd': opt.duration = parse_real("duration", duration = optarg, 1, SECONDS_MAX, "seconds"); break;
        case 'x': opt.prefix = optarg; break;
        case 'o': opt.out = optarg; break;
        case 's': opt.sum_field = optarg; break;
        case 't': opt.timeout = parse_real("timeout", optarg, 0, SECONDS_MAX, "seconds"); break;
        case 'N': opt.requests = parse_count("requests", optarg, 0, 100000000); break;
        case 'A': opt.parent = (int)parse_count("parent", optarg, 1, INT32_MAX); break;
        case 'T': opt.template = optarg; break;
        case 'B': opt.n_base = parse_count("n-base", optarg, 0, UINT64_MAX / 2); break;
        case 'E': opt.error_out = optarg; break;
        default: exit(2);
        }
    }
    if (optind < argc) die("unexpected argument '%s'", argv[optind]);
    if (!strcmp(body, "text")) opt.body = BODY_TEXT;
    else if (!strcmp(body, "texts")) opt.body = BODY_TEXTS;
    else if (!strcmp(body, "query")) opt.body = BODY_QUERY;
    else if (!strcmp(body, "template")) opt.body = BODY_TEMPLATE;
    else die("--body must be text, texts, query or template, got '%s'", body);
    if ((opt.body == BODY_TEMPLATE) != (opt.template != NULL)) die("%s", "--template FILE goes with --body template");
    if (opt.template) read_template();
    else if (strcmp(opt.method, "POST") && strcmp(opt.method, "GET")) die("--method must be POST or GET, got '%s'", opt.method);
    if (!opt.port) die("%s", "--port PORT is required");
    if (!opt.out) die("%s", "--out FILE is required");
    size_t plen = strlen(opt.prefix);
    if (plen == 0 || plen > 200 || strspn(opt.prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != plen)
        die("--prefix must be 1-200 characters of [A-Za-z0-9_-], got '%s'", opt.prefix);
    if (opt.path[0] != '/' || strpbrk(opt.path, " \r\n\t") || strlen(opt.path) > 1000)
        die("--path must start with '/' and contain no whitespace, got '%s'", opt.path);
    if (opt.sum_field) {
        if (strlen(opt.sum_field) > 120 || strpbrk(opt.sum_field, "\"\\")) die("bad --sum-field '%s'", opt.sum_field);
        sum_key_len = (size_t)snprintf(sum_key, sizeof sum_key, "\"%s\"", opt.sum_field);
    }
    if (!duration && !opt.requests) die("%s", "--duration SECONDS (or --requests N) is required");
    if (opt.duration == 0 && !opt.requests)
        die("--duration must be a number of seconds above 0 (0 only with --requests N), got '%s'", duration);
}

/* Accept only a literal loopback address: this tool must never load a machine it does not own. */
static void resolve_loopback(void) {
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, opt.host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) {
        struct sockaddr_in *s = (struct sockaddr_in *)&addr;
        s->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)opt.port);
        s->sin_addr = a4;
        addr_len = sizeof *s;
        snprintf(host_header, sizeof host_header, "Host: %s:%d\r\n", opt.host, opt.port);
    } else if (inet_pton(AF_INET6, opt.host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6)) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&addr;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)opt.port);
        s->sin6_addr = a6;
        addr_len = sizeof *s;
        snprintf(host_header, sizeof host_header, "Host: [::1]:%d\r\n", opt.port);
    } else {
        die("refusing host '%s': only a loopback address (127.0.0.0/8 or ::1) may be loaded", opt.host);
    }
}

/* Allocate the connections, write each one's fixed request head and connect them all. */
static void open_all(void) {
    size_t plen = strlen(opt.prefix);
    size_t body_max = 16 + (size_t)opt.inserts * (plen + 48) + tpl_body_len + tpl_slots * 20;
    size_t head_max = strlen(opt.path) + 256 + plen + tpl_head_len + tpl_slots * 20;
    conns = calloc((size_t)opt.concurrency, sizeof *conns);
    idle = calloc((size_t)opt.concurrency, sizeof *idle);
    scratch = malloc(body_max);
    if (!conns || !idle || !scratch) die("%s", "out of memory");
    for (int i = 0; i < opt.concurrency; i++) {
        conn_t *c = &conns[i];
        c->wbuf = malloc(head_max + body_max);
        c->rcap = 16384;
        c->rbuf = malloc(c->rcap);
        if (!c->wbuf || !c->rbuf) die("%s", "out of memory");
        char *p = c->wbuf;     /* a template's head holds "{n}": it is written whole with each request */
        if (opt.body != BODY_TEMPLATE) {
            p = put_str(p, opt.method);
            *p++ = ' ';
            p = put_str(p, opt.path);
            if (opt.body == BODY_QUERY) {
                p = put_str(p, strchr(opt.path, '?') ? "&text=" : "?text=");
                p = put_str(p, opt.prefix);
                *p++ = '-';
            } else {
                p = put_str(p, " HTTP/1.1\r\n");
                p = put_str(p, host_header);
                p = put_str(p, "Content-Type: application/json\r\nContent-Length: ");
            }
        }
        c->whead = (size_t)(p - c->wbuf);
        start_connect(c);
    }
    for (int64_t deadline = now_ns() + timeout_ns; nidle < opt.concurrency;) {   /* every one, or exit 2 */
        if (!connect_errno && now_ns() >= deadline) connect_errno = ETIMEDOUT;
        if (connect_errno) die("cannot connect to %s:%d: %s", opt.host, opt.port, strerror(connect_errno));
        arm_timer(deadline);
        handle_events(-1);
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double tv_s(struct timeval a, struct timeval b) {
    return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_usec - a.tv_usec) / 1e6;
}

static void print_summary(double window_s, struct rusage *r0, struct rusage *r1) {
    printf("{\"requests\":%llu,\"status_counts\":{", (unsigned long long)st.requests);
    for (int s = 0, first = 1; s < 1000; s++)
        if (st.status_counts[s]) {
            printf("%s\"%d\":%llu", first ? "" : ",", s, (unsigned long long)st.status_counts[s]);
            first = 0;
        }
    printf("},\"window_s\":%.6f,\"cpu_user_s\":%.6f,\"cpu_system_s\":%.6f,\"latency_ms\":", window_s,
           tv_s(r0->ru_utime, r1->ru_utime), tv_s(r0->ru_stime, r1->ru_stime));
    if (st.nlat) {
        qsort(st.lat, st.nlat, sizeof *st.lat, cmp_u32);
        size_t n = st.nlat;
        printf("{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}", st.lat[(n * 50 + 99) / 100 - 1] / 1e3,
               st.lat[(n * 90 + 99) / 100 - 1] / 1e3, st.lat[(n * 99 + 99) / 100 - 1] / 1e3, st.lat[n - 1] / 1e3);
    } else {
        printf("{\"p50\":null,\"p90\":null,\"p99\":null,\"max\":null}");
    }
    printf(",\"warmup_requests\":%llu,\"late\":%llu,\"unsent\":%llu,\"sum_field\":",
           (unsigned long long)st.warmup_requests, (unsigned long long)st.late, (unsigned long long)st.unsent);
    if (opt.sum_field)
        printf("{\"name\":\"%s\",\"sum\":%.17g,\"count\":%llu}}\n", opt.sum_field, st.sum,
               (unsigned long long)st.sum_count);
    else
        printf("null}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);   /* die with the parent (the thread that started us, strictly) */
    parse_args(argc, argv);
    if (opt.parent && getppid() != opt.parent) die("%s", "the parent exited before the load generator started");
    resolve_loopback();
    timeout_ns = (int64_t)(opt.timeout * 1e9);
    if ((out_fd = open(opt.out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        die("cannot open the out file: %s", strerror(errno));
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1: %s", strerror(errno));
    if ((timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
        die("timerfd_create: %s", strerror(errno));
    watch(timer_fd, TAG_TIMER, EPOLLIN, EPOLL_CTL_ADD);
    open_all();

    run_phase('w', opt.warmup, 0);
    printf("WARM\n");
    fflush(stdout);

    /* Wait for GO while still watching the connections (a server may close idle ones). A stdin that
       epoll cannot watch (a regular file) is read directly. */
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_STDIN};
    int stdin_watched = epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) == 0;
    while (!go_received) {
        if (stdin_watched) handle_events(-1);
        else on_stdin();
    }
    if (stdin_watched) epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);

    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int64_t t0 = now_ns();
    run_phase('m', opt.duration, opt.requests);
    int64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &r1);
    printf("DONE\n");
    fflush(stdout);

    out_flush();
    if (close(out_fd) < 0) die("cannot write the out file: %s", strerror(errno));
    print_summary((double)(t1 - t0) / 1e9, &r0, &r1);
    return 0;
}
