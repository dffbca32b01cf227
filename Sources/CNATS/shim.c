#include "cnats.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_err(char *err, int errlen, natsStatus s, jsErrCode jerr, const char *what) {
    if (err == NULL || errlen <= 0) return;
    const char *last = nats_GetLastError(NULL);
    if (jerr != 0)
        snprintf(err, (size_t)errlen, "%s: %s (JetStream error %d)%s%s", what, natsStatus_GetText(s), (int)jerr,
                 last ? ": " : "", last ? last : "");
    else
        snprintf(err, (size_t)errlen, "%s: %s%s%s", what, natsStatus_GetText(s), last ? ": " : "", last ? last : "");
}

typedef struct { cnats_event_cb cb; void *closure; } cnats_handler;

static void on_connected(natsConnection *nc, void *c) { (void)nc; cnats_handler *h = c; h->cb(CNATS_CONNECTED, h->closure); }
static void on_disconnected(natsConnection *nc, void *c) { (void)nc; cnats_handler *h = c; h->cb(CNATS_DISCONNECTED, h->closure); }
static void on_reconnected(natsConnection *nc, void *c) { (void)nc; cnats_handler *h = c; h->cb(CNATS_RECONNECTED, h->closure); }
static void on_closed(natsConnection *nc, void *c) { (void)nc; cnats_handler *h = c; h->cb(CNATS_CLOSED, h->closure); }

natsStatus cnats_connect(natsConnection **nc, jsCtx **js, const char **servers, int count,
                         int64_t timeout_ms, int64_t reconnect_wait_ms, const char *name,
                         cnats_event_cb cb, void *closure, char *err, int errlen) {
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    // The handler lives as long as the process: connections are made once per daemon.
    cnats_handler *h = NULL;
    if (s == NATS_OK && cb != NULL) {
        h = calloc(1, sizeof(*h));
        if (h == NULL) s = NATS_NO_MEMORY; else { h->cb = cb; h->closure = closure; }
    }
    if (s == NATS_OK) s = natsOptions_SetServers(opts, servers, count);
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, timeout_ms);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, reconnect_wait_ms);
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(opts, 0);  // never buffer publishes while disconnected
    if (s == NATS_OK && name != NULL) s = natsOptions_SetName(opts, name);
    if (s == NATS_OK && h != NULL) s = natsOptions_SetDisconnectedCB(opts, on_disconnected, h);
    if (s == NATS_OK && h != NULL) s = natsOptions_SetReconnectedCB(opts, on_reconnected, h);
    if (s == NATS_OK && h != NULL) s = natsOptions_SetClosedCB(opts, on_closed, h);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, h != NULL ? on_connected : NULL, h);
    if (s == NATS_OK) s = natsConnection_Connect(nc, opts);
    natsStatus connected = s;
    if (s == NATS_OK || s == NATS_NOT_YET_CONNECTED) s = natsConnection_JetStream(js, *nc, NULL);
    if (s != NATS_OK) put_err(err, errlen, s, 0, "connect");
    natsOptions_Destroy(opts);
    return s == NATS_OK ? connected : s;
}

natsStatus cnats_ensure_stream(jsCtx *js, const char *name, const char *subjects, int64_t replicas,
                               int64_t max_age_ns, int64_t max_bytes, int64_t max_msgs,
                               int64_t duplicates_ns, int32_t max_msg_size, int64_t *existing_replicas,
                               char *err, int errlen) {
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    *existing_replicas = 0;
    natsStatus s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
    if (s == NATS_OK) {
        *existing_replicas = si->Config != NULL ? si->Config->Replicas : 0;
        jsStreamInfo_Destroy(si);
        return NATS_OK;
    }
    if (s != NATS_NOT_FOUND) { put_err(err, errlen, s, jerr, "stream info"); return s; }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    const char *subs[1] = { subjects };
    cfg.Subjects = subs;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.Discard = js_DiscardOld;
    cfg.Replicas = replicas;
    cfg.MaxAge = max_age_ns;
    cfg.MaxBytes = max_bytes > 0 ? max_bytes : -1;
    cfg.MaxMsgs = max_msgs > 0 ? max_msgs : -1;
    cfg.Duplicates = duplicates_ns;
    if (max_msg_size > 0) cfg.MaxMsgSize = max_msg_size;
    jerr = 0;
    s = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (s == NATS_OK) { *existing_replicas = replicas; jsStreamInfo_Destroy(si); return NATS_OK; }
    put_err(err, errlen, s, jerr, "create stream");
    return s;
}

natsStatus cnats_stream_state(jsCtx *js, const char *name, uint64_t *first, uint64_t *last,
                              uint64_t *msgs, char *leader, int leaderlen, char *err, int errlen) {
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
    if (s != NATS_OK) { put_err(err, errlen, s, jerr, "stream info"); return s; }
    *first = si->State.FirstSeq;
    *last = si->State.LastSeq;
    *msgs = si->State.Msgs;
    if (leader != NULL && leaderlen > 0) {
        leader[0] = 0;
        if (si->Cluster != NULL && si->Cluster->Leader != NULL) snprintf(leader, (size_t)leaderlen, "%s", si->Cluster->Leader);
    }
    jsStreamInfo_Destroy(si);
    return NATS_OK;
}

natsStatus cnats_publish(jsCtx *js, const char *subject, const char *msg_id,
                         const char **keys, const char **values, int n,
                         const void *data, int len, int64_t wait_ms,
                         uint64_t *seq, bool *dup, char *err, int errlen) {
    natsMsg *msg = NULL;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsMsg_Create(&msg, subject, NULL, (const char *)data, len);
    for (int i = 0; s == NATS_OK && i < n; i++) s = natsMsgHeader_Set(msg, keys[i], values[i]);
    if (s == NATS_OK) {
        jsPubOptions o;
        jsPubOptions_Init(&o);
        o.MsgId = msg_id;
        o.MaxWait = wait_ms;
        s = js_PublishMsg(&pa, js, msg, &o, &jerr);
    }
    if (s == NATS_OK) {
        *seq = pa->Sequence;
        *dup = pa->Duplicate;
        jsPubAck_Destroy(pa);
    } else {
        put_err(err, errlen, s, jerr, "publish");
    }
    natsMsg_Destroy(msg);
    return s;
}

natsStatus cnats_subscribe_ordered(natsSubscription **sub, jsCtx *js, const char *stream,
                                   const char *filter, uint64_t start, char *err, int errlen) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = start <= 1 ? js_DeliverAll : js_DeliverByStartSequence;
    so.Config.OptStartSeq = start <= 1 ? 0 : start;
    jsErrCode jerr = 0;
    natsStatus s = js_SubscribeSync(sub, js, filter, NULL, &so, &jerr);
    if (s == NATS_OK) {
        // Ordered consumers buffer in the client; let a catching-up replica hold many messages.
        natsSubscription_SetPendingLimits(*sub, 1 << 20, 1 << 30);
    } else {
        put_err(err, errlen, s, jerr, "subscribe");
    }
    return s;
}

natsStatus cnats_next(natsSubscription *sub, int64_t timeout_ms, natsMsg **msg,
                      uint64_t *seq, uint64_t *pending, int64_t *timestamp_ns) {
    natsStatus s = natsSubscription_NextMsg(msg, sub, timeout_ms);
    if (s != NATS_OK) return s;
    jsMsgMetaData *meta = NULL;
    s = natsMsg_GetMetaData(&meta, *msg);
    if (s != NATS_OK) { natsMsg_Destroy(*msg); *msg = NULL; return s; }
    *seq = meta->Sequence.Stream;
    *pending = meta->NumPending;
    *timestamp_ns = meta->Timestamp;
    jsMsgMetaData_Destroy(meta);
    return NATS_OK;
}

const char *cnats_header(natsMsg *msg, const char *key) {
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, key, &v) != NATS_OK) return NULL;
    return v;
}

natsStatus cnats_subscribe_durable(natsSubscription **sub, jsCtx *js, const char *subject, const char *durable,
                                   int64_t ack_wait_ms, const char *create_stream, int64_t replicas,
                                   char *err, int errlen) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = ack_wait_ms * 1000000;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.MaxAckPending = 1024;
    jsErrCode jerr = 0;
    natsStatus s = js_PullSubscribe(sub, js, subject, durable, NULL, &so, &jerr);
    if (s != NATS_OK && create_stream != NULL && create_stream[0] != 0) {
        jsStreamInfo *si = NULL;
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = create_stream;
        const char *subs[1] = { subject };
        cfg.Subjects = subs;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = replicas;
        jsErrCode cerr = 0;
        natsStatus cs = js_AddStream(&si, js, &cfg, NULL, &cerr);
        if (cs == NATS_OK) jsStreamInfo_Destroy(si);
        jerr = 0;
        s = js_PullSubscribe(sub, js, subject, durable, NULL, &so, &jerr);
    }
    if (s != NATS_OK) put_err(err, errlen, s, jerr, "subscribe");
    return s;
}

natsStatus cnats_fetch(natsSubscription *sub, int max, int64_t timeout_ms, natsMsgList *list) {
    jsErrCode jerr = 0;
    return natsSubscription_Fetch(list, sub, max, timeout_ms, &jerr);
}

natsStatus cnats_meta(natsMsg *msg, uint64_t *seq, uint64_t *pending, uint64_t *delivered) {
    jsMsgMetaData *meta = NULL;
    natsStatus s = natsMsg_GetMetaData(&meta, msg);
    if (s != NATS_OK) return s;
    *seq = meta->Sequence.Stream;
    *pending = meta->NumPending;
    *delivered = meta->NumDelivered;
    jsMsgMetaData_Destroy(meta);
    return NATS_OK;
}

natsStatus cnats_ack(natsMsg *msg) {
    jsErrCode jerr = 0;
    return natsMsg_AckSync(msg, NULL, &jerr);
}

bool cnats_connected(natsConnection *nc) {
    return nc != NULL && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}

void cnats_close(natsConnection *nc, jsCtx *js) {
    if (js != NULL) jsCtx_Destroy(js);
    if (nc != NULL) { natsConnection_Close(nc); natsConnection_Destroy(nc); }
}
