#include "ckafka.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_err(char *err, int errlen, const char *what, rd_kafka_resp_err_t code) {
    if (err == NULL || errlen <= 0) return;
    snprintf(err, (size_t)errlen, "%s: %s (%s)", what, rd_kafka_err2str(code), rd_kafka_err2name(code));
}

/// Where a delivery report lands: `ckafka_produce_sync` passes one per message as msg_opaque.
typedef struct { int done; rd_kafka_resp_err_t err; } ckafka_delivery;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk; (void)opaque;
    ckafka_delivery *d = m->_private;
    if (d != NULL) { d->err = m->err; d->done = 1; }
}

/// What a client's log callback needs: set as the configuration's opaque, freed by ckafka_destroy.
typedef struct { ckafka_log_cb cb; void *closure; } ckafka_logger;

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    ckafka_logger *l = rd_kafka_opaque(rk);
    if (l != NULL && l->cb != NULL) l->cb(l->closure, level, fac, buf);
}

rd_kafka_t *ckafka_new(rd_kafka_type_t type, const char **keys, const char **values, int n,
                       ckafka_log_cb log, void *closure, char *err, int errlen) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char buf[512];
    for (int i = 0; i < n; i++) {
        if (rd_kafka_conf_set(conf, keys[i], values[i], buf, sizeof buf) != RD_KAFKA_CONF_OK) {
            if (err != NULL && errlen > 0) snprintf(err, (size_t)errlen, "%s=%s: %s", keys[i], values[i], buf);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    if (type == RD_KAFKA_PRODUCER) rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    ckafka_logger *l = NULL;
    if (log != NULL) {
        l = calloc(1, sizeof *l);
        if (l != NULL) {
            l->cb = log;
            l->closure = closure;
            rd_kafka_conf_set_opaque(conf, l);
            rd_kafka_conf_set_log_cb(conf, on_log);
        }
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, buf, sizeof buf);  // takes conf on success
    if (rk == NULL) {
        if (err != NULL && errlen > 0) snprintf(err, (size_t)errlen, "rd_kafka_new: %s", buf);
        rd_kafka_conf_destroy(conf);
        free(l);
        return NULL;
    }
    if (type == RD_KAFKA_CONSUMER) rd_kafka_poll_set_consumer(rk);
    return rk;
}

rd_kafka_resp_err_t ckafka_subscribe(rd_kafka_t *rk, const char *topic, char *err, int errlen) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e) put_err(err, errlen, "subscribe", e);
    return e;
}

rd_kafka_resp_err_t ckafka_commit(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t offset, char *err, int errlen) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
    rd_kafka_resp_err_t e = rd_kafka_commit(rk, list, 0);
    // The request may succeed while the partition's own commit failed.
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && list->cnt > 0) e = list->elems[0].err;
    rd_kafka_topic_partition_list_destroy(list);
    if (e) put_err(err, errlen, "commit", e);
    return e;
}

rd_kafka_resp_err_t ckafka_produce_sync(rd_kafka_t *rk, const char *topic, const void *key, size_t keylen,
                                        const void *payload, size_t len, const char **hkeys, const char **hvalues,
                                        int n, int timeout_ms, char *err, int errlen) {
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new((size_t)n);
    for (int i = 0; i < n; i++) rd_kafka_header_add(hdrs, hkeys[i], -1, hvalues[i], -1);
    // On the heap: a report that never comes (see below) must not write into a dead stack.
    ckafka_delivery *d = calloc(1, sizeof *d);
    if (d == NULL) { rd_kafka_headers_destroy(hdrs); put_err(err, errlen, "produce", RD_KAFKA_RESP_ERR__FAIL); return RD_KAFKA_RESP_ERR__FAIL; }
    rd_kafka_resp_err_t e = rd_kafka_producev(rk,
        RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY((void *)key, keylen),
        RD_KAFKA_V_VALUE((void *)payload, len),
        RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE(d),
        RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(hdrs);  // owned by the message only when producev succeeds
        free(d);
        put_err(err, errlen, "produce", e);
        return e;
    }
    for (int waited = 0; !d->done && waited < timeout_ms; waited += 50) rd_kafka_poll(rk, 50);
    if (!d->done) {
        // Drop the message (its report then comes at once, as purged) rather than let it be
        // delivered after the caller has given up on it.
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(rk, 1000);
    }
    if (!d->done) {
        // Still no report: leak `d` (a few bytes) so that a late report writes to live memory.
        put_err(err, errlen, "dead letter delivery", RD_KAFKA_RESP_ERR__TIMED_OUT);
        return RD_KAFKA_RESP_ERR__TIMED_OUT;
    }
    e = d->err;
    free(d);
    if (e) put_err(err, errlen, "dead letter delivery", e);
    return e;
}

int64_t ckafka_lag(rd_kafka_t *rk) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || parts == NULL) return -1;
    if (parts->cnt == 0) { rd_kafka_topic_partition_list_destroy(parts); return -1; }
    rd_kafka_position(rk, parts);
    int64_t lag = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        if (p->offset < 0) continue;
        if (rd_kafka_get_watermark_offsets(rk, p->topic, p->partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        if (hi > p->offset) lag += hi - p->offset;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return lag;
}

void ckafka_destroy(rd_kafka_t *rk, int is_consumer) {
    if (rk == NULL) return;
    ckafka_logger *l = rd_kafka_opaque(rk);
    if (is_consumer) rd_kafka_consumer_close(rk);
    else rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(rk);  // joins librdkafka's threads: no log line comes after it
    free(l);
}
