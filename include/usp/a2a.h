/* usp/a2a.h: the data movement around a ulysses all-to-all, on the host.
 *
 * PACK cuts a rank's tensor into `ulysses` pieces, piece p for ulysses rank
 * p, laid out one after the other in the SEND buffer; the all-to-all swaps
 * piece p of rank u with piece u of rank p; UNPACK puts piece p of RECV
 * (which came from ulysses rank p) in place. Piece shapes (Ls = L/world,
 * Lr = L/ring, Hu = H/U, Hkvu = K/V heads per ulysses rank):
 *   Q   (B, Ls, Hu, D)    Q, dO: sequence -> heads
 *   KV  (B, Ls, Hkvu, D)  K, V: sequence -> heads (replicated when Hkv < U)
 *   O   (B, Ls, Hu, D)    O, dQ: heads -> sequence
 *   LSE (B, Hu, Ls)       LSE: heads -> sequence
 *   DKV (B, Ls, Hkvu, D)  dK, dV: heads -> sequence, replicas summed */
#ifndef USP_A2A_H
#define USP_A2A_H

#include "usp/schedule.h"

/* elem is 8 (double) or 4 (float). */
void usp_a2a_pack(const usp_config *c, usp_a2a a, const void *src, void *send, size_t elem);
void usp_a2a_unpack(const usp_config *c, usp_a2a a, const void *recv, void *dst, size_t elem);

/* Elements of the source and destination tensors of a pattern. */
long usp_a2a_src_elems(const usp_config *c, usp_a2a a);
long usp_a2a_dst_elems(const usp_config *c, usp_a2a a);

#endif
