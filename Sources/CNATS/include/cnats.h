// A thin C layer over the NATS C client (libnats), so that Swift never fills libnats structs
// field by field. Only AuthzLog uses it. Every function returns a natsStatus (NATS_OK == 0);
// on failure `err` (when given) receives a NUL-terminated explanation.
#ifndef CNATS_H
#define CNATS_H
#include <nats/nats.h>
#include <stdint.h>
#include <stdbool.h>

/// Connection events reported to the callback given to cnats_connect.
enum { CNATS_CONNECTED = 1, CNATS_DISCONNECTED = 2, CNATS_RECONNECTED = 3, CNATS_CLOSED = 4 };

typedef void (*cnats_event_cb)(int event, void *closure);

/// Connects to any of `servers` (nats:// URLs), reconnecting forever in the background; when no
/// server answers at start the connection keeps trying (natsOptions_SetRetryOnFailedConnect)
/// and the call returns NATS_NOT_YET_CONNECTED with `*nc` set.
natsStatus cnats_connect(natsConnection **nc, jsCtx **js, const char **servers, int count,
                         int64_t timeout_ms, int64_t reconnect_wait_ms, const char *name,
                         cnats_event_cb cb, void *closure, char *err, int errlen);

/// Creates stream `name` over `subjects` (e.g. "authzd.>") when missing; when it exists, leaves
/// it as it is and reports its replicas in `*existing_replicas`. Limits of 0 mean unlimited.
natsStatus cnats_ensure_stream(jsCtx *js, const char *name, const char *subjects, int64_t replicas,
                               int64_t max_age_ns, int64_t max_bytes, int64_t max_msgs,
                               int64_t duplicates_ns, int32_t max_msg_size, int64_t *existing_replicas,
                               char *err, int errlen);

/// The stream's first and last sequence and its leader's name (may be empty).
natsStatus cnats_stream_state(jsCtx *js, const char *name, uint64_t *first, uint64_t *last,
                              uint64_t *msgs, char *leader, int leaderlen, char *err, int errlen);

/// Publishes `data` on `subject` with message id `msg_id` and `n` headers; waits up to
/// `wait_ms` for the stream's acknowledgement. `*seq` is the stream sequence (for a duplicate
/// id, the original's) and `*dup` whether it was a duplicate.
natsStatus cnats_publish(jsCtx *js, const char *subject, const char *msg_id,
                         const char **keys, const char **values, int n,
                         const void *data, int len, int64_t wait_ms,
                         uint64_t *seq, bool *dup, char *err, int errlen);

/// An ordered push consumer over the whole stream `stream` (subject `filter`, e.g.
/// "authzd.>"), starting at stream sequence `start` (1 = the beginning). No acks.
natsStatus cnats_subscribe_ordered(natsSubscription **sub, jsCtx *js, const char *stream,
                                   const char *filter, uint64_t start, char *err, int errlen);

/// The next message, waiting up to `timeout_ms`: NATS_TIMEOUT when none came.
/// On success: its stream sequence, the messages still pending after it, subject, payload and
/// the value of header `want` (or NULL). `*msg` must be destroyed with natsMsg_Destroy.
natsStatus cnats_next(natsSubscription *sub, int64_t timeout_ms, natsMsg **msg,
                      uint64_t *seq, uint64_t *pending, int64_t *timestamp_ns);

/// The value of header `key` of `msg`, or NULL (owned by the message).
const char *cnats_header(natsMsg *msg, const char *key);

/// A durable pull consumer named `durable` on `subject` (explicit acks, AckWait `ack_wait_ms`),
/// bound to the stream that holds `subject`; when no stream holds it, stream `create_stream`
/// is created over `subject` (file storage, `replicas`) first.
natsStatus cnats_subscribe_durable(natsSubscription **sub, jsCtx *js, const char *subject, const char *durable,
                                   int64_t ack_wait_ms, const char *create_stream, int64_t replicas,
                                   char *err, int errlen);

/// Up to `max` messages, waiting up to `timeout_ms`: NATS_TIMEOUT when none came. The list
/// must be destroyed with natsMsgList_Destroy.
natsStatus cnats_fetch(natsSubscription *sub, int max, int64_t timeout_ms, natsMsgList *list);

/// Stream sequence and pending count of a JetStream message.
natsStatus cnats_meta(natsMsg *msg, uint64_t *seq, uint64_t *pending, uint64_t *delivered);

/// Synchronous ack (waits for the server's confirmation).
natsStatus cnats_ack(natsMsg *msg);

/// Whether the connection is up right now.
bool cnats_connected(natsConnection *nc);

/// Closes and destroys a connection and its JetStream context.
void cnats_close(natsConnection *nc, jsCtx *js);
#endif
