/* mask_internal.h: the mask object's fields (core/ only).
 *
 * Besides the slices and their per-row layers, a mask caches what depends
 * on how tokens are laid out over the ring (core/dispatch.c): per (token
 * layout, ring degree), every ring rank's ascending token list and, once
 * asked, the summary of every (query rank, key rank, layer) block. Entries
 * are added under `lock` and never change afterwards, so readers may keep
 * the pointers they were given for the life of the mask. */
#ifndef USP_MASK_INTERNAL_H
#define USP_MASK_INTERNAL_H

#include <pthread.h>
#include "usp/dispatch.h"
#include "usp/mask.h"

typedef struct dispatch_entry {
    int impl, ring;
    int32_t *tokens;                 /* [ring][seq/ring], each rank's ascending */
    usp_mask_block *blocks;          /* [ring][ring][layers]; pairs summed over lists */
    struct dispatch_entry *next;
} dispatch_entry;

struct usp_mask {
    long seq;
    int lists;                       /* 1: every batch element shares list 0 */
    long left, right;                /* window, -1 unbounded */
    usp_slice *slices;               /* list b: slices[first[b] .. first[b+1]) */
    long *first;
    int layers;
    int32_t *lo, *hi;                /* [lists][layers][seq] global key intervals */
    double *pairs;                   /* [lists] visible pairs */
    char desc[192];
    pthread_mutex_t lock;
    dispatch_entry *cache;
};

void usp_mask_cache_free(usp_mask *m);

#endif
