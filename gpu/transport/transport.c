/* transport.c: which transport a world uses (see transport.h), and the even
 * all-to-all on top of all_to_all_v. */
#define _POSIX_C_SOURCE 200809L /* gethostname */
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "executor/executor_cuda.h"

int usp_transport_choose(int world, const char *const *host_ids, const char *const *gpu_ids, const char *setting,
                         char *why, size_t why_len) {
    int one_host = 1, shared_a = -1, shared_b = -1;
    for (int g = 1; g < world; g++)
        if (strcmp(host_ids[g], host_ids[0])) one_host = 0;
    for (int a = 0; a < world && shared_a < 0; a++)
        for (int b = a + 1; b < world; b++)
            if (!strcmp(host_ids[a], host_ids[b]) && !strcmp(gpu_ids[a], gpu_ids[b])) {
                shared_a = a;
                shared_b = b;
                break;
            }
    if (setting && *setting && strcmp(setting, "nccl") && strcmp(setting, "ipc")) {
        snprintf(why, why_len, "USP_TRANSPORT='%s': nccl or ipc", setting);
        return -1;
    }
    if (setting && !strcmp(setting, "ipc")) {
        if (one_host) return 1;
        snprintf(why, why_len, "USP_TRANSPORT=ipc, but the ranks are on several machines (rank 0 on %s): CUDA IPC "
                 "works within one machine", host_ids[0]);
        return -1;
    }
    if (shared_a < 0) return 0;
    if (setting && !strcmp(setting, "nccl")) {
        snprintf(why, why_len, "USP_TRANSPORT=nccl, but ranks %d and %d share GPU %s on %s: NCCL takes one rank per "
                 "GPU (USP_TRANSPORT=ipc, or no USP_TRANSPORT, runs them through CUDA IPC)", shared_a, shared_b,
                 gpu_ids[shared_a], host_ids[shared_a]);
        return -1;
    }
    if (one_host) return 1;
    snprintf(why, why_len, "ranks %d and %d share GPU %s on %s and the ranks span several machines: NCCL takes one "
             "rank per GPU and CUDA IPC one machine (start one rank per GPU)", shared_a, shared_b,
             gpu_ids[shared_a], host_ids[shared_a]);
    return -1;
}

/* What each rank tells rank 0. */
typedef struct {
    char host[256];
    char gpu[32];
    char setting[16];
} rank_place;

enum { TAG_PLACE = 0x7001, TAG_CHOICE = 0x7002 };

typedef struct {
    int choice;          /* 0 NCCL, 1 IPC, -1 refused */
    char why[400];
} choice_note;

static usp_status my_place(const usp_transport_env *e, rank_place *p) {
    memset(p, 0, sizeof *p);
    if (gethostname(p->host, sizeof p->host - 1) != 0) snprintf(p->host, sizeof p->host, "localhost");
    USP_CUDA_CHECK(cudaDeviceGetPCIBusId(p->gpu, (int)sizeof p->gpu, e->device));
    const char *s = getenv("USP_TRANSPORT");
    snprintf(p->setting, sizeof p->setting, "%s", s ? s : "");
    return USP_OK;
}

/* Rank 0 collects every rank's place, chooses and tells everyone. */
static usp_status agree(const usp_transport_env *e, choice_note *out) {
    rank_place mine;
    USP_TRY(my_place(e, &mine));
    memset(out, 0, sizeof *out);
    if (e->rank != 0) {
        USP_TRY(usp_links_send(e->links, 0, TAG_PLACE, &mine, sizeof mine));
        return usp_links_recv(e->links, 0, TAG_CHOICE, out, sizeof *out, "choosing the transport");
    }
    rank_place *all = usp_calloc((size_t)e->world, sizeof *all);
    const char **hosts = usp_calloc((size_t)e->world, sizeof *hosts), **gpus = usp_calloc((size_t)e->world, sizeof *gpus);
    usp_status st = all && hosts && gpus ? USP_OK : USP_EINTERNAL;
    if (st == USP_OK) all[0] = mine;
    for (int g = 1; g < e->world && st == USP_OK; g++)
        st = usp_links_recv(e->links, g, TAG_PLACE, &all[g], sizeof all[g], "choosing the transport");
    if (st == USP_OK) {
        for (int g = 0; g < e->world; g++) {
            all[g].host[sizeof all[g].host - 1] = all[g].gpu[sizeof all[g].gpu - 1] = '\0';
            hosts[g] = all[g].host;
            gpus[g] = all[g].gpu;
        }
        out->choice = usp_transport_choose(e->world, hosts, gpus, mine.setting, out->why, sizeof out->why);
        for (int g = 1; g < e->world && st == USP_OK; g++)
            st = usp_links_send(e->links, g, TAG_CHOICE, out, sizeof *out);
    }
    free(all);
    free(hosts);
    free(gpus);
    return st;
}

usp_status usp_transport_open(const usp_transport_env *e, usp_transport **out) {
    *out = NULL;
    choice_note c;
    USP_TRY(agree(e, &c));
    if (c.choice < 0) {
        c.why[sizeof c.why - 1] = '\0';
        return usp_fail(USP_EINVAL, "%s", c.why);
    }
    return c.choice == 1 ? usp_transport_open_ipc(e, out) : usp_transport_open_nccl(e, out);
}

usp_status usp_transport_all_to_all(usp_transport *t, int n, const void *send, void *recv, size_t piece_bytes,
                                    cudaStream_t st) {
    size_t *off = usp_calloc((size_t)n, sizeof *off), *bytes = usp_calloc((size_t)n, sizeof *bytes);
    usp_status s = off && bytes ? USP_OK : USP_EINTERNAL;
    for (int i = 0; i < n && s == USP_OK; i++) {
        off[i] = (size_t)i * piece_bytes;
        bytes[i] = piece_bytes;
    }
    if (s == USP_OK) s = t->ops->all_to_all_v(t, n, send, off, bytes, recv, off, bytes, st);
    free(off);
    free(bytes);
    return s;
}
