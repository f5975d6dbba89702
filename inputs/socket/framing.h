/*
 * framing.h: splitting a byte stream (or one datagram) into messages.
 *
 * Newline-delimited framing, and RFC 6587 octet counting ("LEN SP MSG")
 * for syslog over stream sockets, strict or detected per frame. Lines
 * longer than max_bytes are split into several frames or truncated, and
 * counted. The framer is a pure state machine over caller buffers: it
 * never does I/O, and it copies only a frame that crosses a feed boundary
 * (into one buffer that grows up to max_bytes, then stays).
 */
#ifndef SOCK_FRAMING_H
#define SOCK_FRAMING_H

#include <stddef.h>
#include <stdint.h>

typedef enum sock_frame_mode {
    SOCK_FRAME_NEWLINE = 0, /* one message per LF; a CR before the LF is dropped */
    SOCK_FRAME_OCTET = 1,   /* RFC 6587 octet counting only; a bad header is an error */
    SOCK_FRAME_AUTO = 2,    /* per frame: a leading digit means octet counting, else LF */
    SOCK_FRAME_NONE = 3,    /* datagrams: the whole datagram is one message */
} sock_frame_mode;

typedef enum sock_frame_long {
    SOCK_LONG_SPLIT = 0,    /* a longer message becomes several frames of max_bytes */
    SOCK_LONG_TRUNCATE = 1, /* a longer message keeps its first max_bytes, the rest is dropped */
} sock_frame_long;

/* Flags passed with a frame. */
#define SOCK_FRAME_F_SPLIT 0x1      /* a piece of a longer message (not the last piece) */
#define SOCK_FRAME_F_TRUNCATED 0x2  /* the message was cut at max_bytes */
#define SOCK_FRAME_F_INCOMPLETE 0x4 /* end of stream inside the message */

/* Receives one frame; p is valid only during the call. Return 0 to go on,
 * anything else stops the feed, which returns that value. */
typedef int (*sock_frame_fn)(void *arg, const uint8_t *p, size_t n, unsigned flags);

typedef struct sock_framer {
    sock_frame_mode mode;
    sock_frame_long on_long;
    size_t max_bytes;        /* longest frame handed to the callback, bytes (>= 1) */
    int state;               /* internal: FR_* */
    uint8_t *buf;            /* partial frame carried between feeds */
    size_t len;              /* bytes in buf */
    size_t cap;              /* bytes allocated for buf (<= max_bytes + 1) */
    size_t want;             /* octet counting: bytes of the message still to come */
    size_t hdr;              /* octet counting: the length being parsed */
    unsigned hdr_digits;     /* digits of the length seen so far */
    unsigned cur_flags;      /* flags of the message being assembled */
    uint64_t frames;         /* frames emitted */
    uint64_t split_msgs;     /* messages split because they were longer than max_bytes */
    uint64_t truncated_msgs; /* messages truncated (on_long truncate, or cut by end of stream) */
    uint64_t dropped_bytes;  /* bytes thrown away by truncation */
    uint64_t errors;         /* framing errors (strict octet counting) */
} sock_framer;

/* Sets up a framer; no allocation until a frame crosses a feed boundary. */
void sock_framer_init(sock_framer *f, sock_frame_mode mode, sock_frame_long on_long,
                      size_t max_bytes);
/* Frees the carry buffer. Accepts NULL. */
void sock_framer_free(sock_framer *f);

/*
 * Feeds n stream bytes; calls fn for each complete frame, in order.
 * Returns 0, -EPROTO on an invalid octet-counting header in strict mode
 * (the stream cannot be resynchronised: close it), -ENOMEM, or the first
 * nonzero value fn returned. After an error the framer must not be fed.
 */
int sock_framer_feed(sock_framer *f, const uint8_t *p, size_t n, sock_frame_fn fn, void *arg);

/* End of stream: hands a partial frame, if any, to fn (flag INCOMPLETE for
 * an octet-counted message cut short). Returns 0 or fn's nonzero value. */
int sock_framer_finish(sock_framer *f, sock_frame_fn fn, void *arg);

/* One datagram: SOCK_FRAME_NONE makes it one message (trailing CR/LF
 * removed); the other modes split it like a stream that ends with it.
 * The framer must not hold a partial stream frame. */
int sock_framer_datagram(sock_framer *f, const uint8_t *p, size_t n, sock_frame_fn fn, void *arg);

#endif /* SOCK_FRAMING_H */
