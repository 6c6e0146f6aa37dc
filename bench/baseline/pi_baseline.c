/*
 * pi_baseline: the smallest fair C counterpart of rpi-client's publishing, for `make bench`
 * (issue #13 item 5). One thread, libmosquitto's own loop: a version 3 heartbeat
 * (`rpi/{id}/heartbeat`, QoS 0) every 500 ms and one version 3 state report per entity
 * (`rpi/{id}/state`, QoS 0) every 100 ms, byte for byte the layouts of docs/protocol.md;
 * `Online` retained on `rpi/{id}/status` after connecting, the will `ConnectionLost`. It
 * drives nothing (no segments): it is the floor of what publishing alone costs.
 *
 * Usage: pi_baseline HOST PORT CLIENT_ID ENTITIES SECONDS
 * Build: cc -O2 -o pi_baseline pi_baseline.c -lmosquitto
 */
#include <mosquitto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ms(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Status (kind 5, 14 bytes): header, presence, session u32, timestamp u64. */
static void status(uint8_t out[14], uint8_t presence, uint32_t session) {
    out[0] = 0x35;
    out[1] = presence;
    put_u32(out + 2, session);
    put_u64(out + 6, now_ms(CLOCK_REALTIME));
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CLIENT_ID ENTITIES SECONDS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *id = argv[3];
    int port = atoi(argv[2]), entities = atoi(argv[4]), seconds = atoi(argv[5]);
    if (port <= 0 || entities <= 0 || entities > 64 || seconds <= 0) {
        fprintf(stderr, "bad PORT, ENTITIES (1-64) or SECONDS\n");
        return 2;
    }
    char hb_topic[128], st_topic[128], status_topic[128];
    snprintf(hb_topic, sizeof hb_topic, "rpi/%s/heartbeat", id);
    snprintf(st_topic, sizeof st_topic, "rpi/%s/state", id);
    snprintf(status_topic, sizeof status_topic, "rpi/%s/status", id);
    uint32_t session = (uint32_t)(now_ms(CLOCK_REALTIME) / 1000u);

    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(id, true, NULL);
    if (!m) {
        fprintf(stderr, "mosquitto_new failed\n");
        return 1;
    }
    uint8_t will[14];
    status(will, 3 /* ConnectionLost */, session);
    mosquitto_will_set(m, status_topic, sizeof will, will, 1, true);
    if (mosquitto_connect(m, host, port, 5) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cannot connect to %s:%d\n", host, port);
        return 1;
    }
    uint8_t online[14];
    status(online, 1 /* Online */, session);
    mosquitto_publish(m, NULL, status_topic, sizeof online, online, 1, true);

    uint64_t start = now_ms(CLOCK_MONOTONIC), next_hb = start, next_st = start;
    uint32_t seq = 0;
    while (now_ms(CLOCK_MONOTONIC) - start < (uint64_t)seconds * 1000u) {
        uint64_t t = now_ms(CLOCK_MONOTONIC);
        if (t >= next_hb) {
            uint8_t hb[13];
            hb[0] = 0x31;
            put_u32(hb + 1, seq++);
            put_u64(hb + 5, now_ms(CLOCK_REALTIME));
            mosquitto_publish(m, NULL, hb_topic, sizeof hb, hb, 0, false);
            next_hb += 500;
        }
        if (t >= next_st) {
            for (int e = 1; e <= entities; e++) {
                uint8_t st[40];
                memset(st, 0, sizeof st);
                st[0] = 0x32;
                put_u32(st + 1, (uint32_t)e);
                put_u64(st + 5, now_ms(CLOCK_REALTIME));
                put_u32(st + 13, (uint32_t)(e * 1000));
                mosquitto_publish(m, NULL, st_topic, sizeof st, st, 0, false);
            }
            next_st += 100;
        }
        uint64_t wake = next_hb < next_st ? next_hb : next_st;
        t = now_ms(CLOCK_MONOTONIC);
        int timeout = wake > t ? (int)(wake - t) : 0;
        /* Sleeps in select() until the next publish is due or the socket has work. */
        int rc = mosquitto_loop(m, timeout, 1);
        if (rc != MOSQ_ERR_SUCCESS) mosquitto_reconnect(m);
    }
    uint8_t offline[14];
    status(offline, 2 /* Offline */, session);
    mosquitto_publish(m, NULL, status_topic, sizeof offline, offline, 1, true);
    mosquitto_loop(m, 100, 1);
    mosquitto_disconnect(m);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return 0;
}
