// A thin C layer over librdkafka (Debian's rdkafka.h), for what Swift cannot call directly
// (rd_kafka_producev is variadic) or should not assemble field by field (topic-partition lists,
// header sets, the delivery-report wait). Only AuthzServer's KafkaEventSource.swift uses it.
// Every function returning rd_kafka_resp_err_t returns RD_KAFKA_RESP_ERR_NO_ERROR (0) on
// success; on failure `err` (when given) receives a NUL-terminated explanation.
#ifndef CKAFKA_H
#define CKAFKA_H
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stddef.h>

/// Receives librdkafka's log lines: syslog `level` (0 emergency … 7 debug), facility, text.
/// Called from librdkafka's internal threads, concurrently: it must be thread-safe.
typedef void (*ckafka_log_cb)(void *closure, int level, const char *facility, const char *text);

/// Creates a client of `type` (RD_KAFKA_CONSUMER or RD_KAFKA_PRODUCER) from `n` configuration
/// properties (`keys[i]` = `values[i]`). A producer gets a delivery-report callback that
/// `ckafka_produce_sync` relies on; a consumer has its main queue redirected to the consumer
/// queue (rd_kafka_poll_set_consumer). Log lines go to `log(closure, …)` when `log` is not
/// NULL (else to stderr): `closure` must stay valid until `ckafka_destroy` returns. NULL on a
/// refused property or a failed creation, with the reason in `err`. The corresponding C
/// functions are rd_kafka_conf_set, rd_kafka_conf_set_log_cb and rd_kafka_new.
rd_kafka_t *ckafka_new(rd_kafka_type_t type, const char **keys, const char **values, int n,
                       ckafka_log_cb log, void *closure, char *err, int errlen);

/// Subscribes a consumer to one topic (the group assigns its partitions; rebalances are
/// handled by librdkafka's default assign/unassign). The C function is rd_kafka_subscribe.
rd_kafka_resp_err_t ckafka_subscribe(rd_kafka_t *rk, const char *topic, char *err, int errlen);

/// Synchronously commits `offset` (the next offset to consume, i.e. the last handled + 1) of
/// `topic`/`partition` for the consumer's group; returns once the group coordinator answered.
/// The C function is rd_kafka_commit(rk, offsets, async = 0).
rd_kafka_resp_err_t ckafka_commit(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t offset, char *err, int errlen);

/// Produces `len` bytes of `payload` (with key `key`/`keylen`, may be NULL/0) to `topic` (any
/// partition) with `n` headers, then serves the producer's delivery reports until this
/// message's report arrives or `timeout_ms` passes (RD_KAFKA_RESP_ERR__TIMED_OUT; the message
/// may still be delivered later). Returns the report's error: NO_ERROR means the broker
/// acknowledged it as the producer's `acks` setting demands. The C functions are
/// rd_kafka_producev and rd_kafka_poll.
rd_kafka_resp_err_t ckafka_produce_sync(rd_kafka_t *rk, const char *topic, const void *key, size_t keylen,
                                        const void *payload, size_t len, const char **hkeys, const char **hvalues,
                                        int n, int timeout_ms, char *err, int errlen);

/// Events still to be consumed: over the partitions assigned to this consumer, the sum of
/// (high watermark − position), from the watermarks the last fetches reported (no broker
/// round trip). A partition without a position yet counts 0. -1 when nothing is assigned.
int64_t ckafka_lag(rd_kafka_t *rk);

/// Closes a consumer (leaves the group: its partitions go to the other members at once) and
/// destroys any client; waits at most a few seconds for in-flight requests. The C functions
/// are rd_kafka_consumer_close and rd_kafka_destroy.
void ckafka_destroy(rd_kafka_t *rk, int is_consumer);
#endif
