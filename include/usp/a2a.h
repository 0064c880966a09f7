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
 *   DKV (B, Ls, Hkvu, D)  dK, dV: heads -> sequence, replicas summed
 * With an uneven head split (usp/layout.h) the pieces differ in size: rank u
 * sends rank p the heads of p (Q, KV) or of u (O, LSE, DKV), and the pieces
 * of SEND (RECV) lie one after the other, each as long as it is
 * (usp_a2a_send_offset, usp_a2a_recv_offset). The functions without a rank
 * are rank 0's, which every rank shares when the split is even. */
#ifndef USP_A2A_H
#define USP_A2A_H

#include "usp/schedule.h"

/* elem is 8 (double) or 4 (float). u: the packing rank's ulysses rank. */
void usp_a2a_pack_rank(const usp_config *c, int u, usp_a2a a, const void *src, void *send, size_t elem);
void usp_a2a_unpack_rank(const usp_config *c, int u, usp_a2a a, const void *recv, void *dst, size_t elem);
void usp_a2a_pack(const usp_config *c, usp_a2a a, const void *src, void *send, size_t elem);
void usp_a2a_unpack(const usp_config *c, usp_a2a a, const void *recv, void *dst, size_t elem);

/* Elements of the source and destination tensors of a pattern (of ulysses rank u). */
long usp_a2a_src_elems_rank(const usp_config *c, usp_a2a a, int u);
long usp_a2a_dst_elems_rank(const usp_config *c, usp_a2a a, int u);
long usp_a2a_src_elems(const usp_config *c, usp_a2a a);
long usp_a2a_dst_elems(const usp_config *c, usp_a2a a);

/* The piece ulysses rank u sends to (receives from) ulysses rank p, and
 * where it lies in SEND (RECV), in elements. */
long usp_a2a_send_elems(const usp_config *c, usp_a2a a, int u, int p);
long usp_a2a_recv_elems(const usp_config *c, usp_a2a a, int u, int p);
long usp_a2a_send_offset(const usp_config *c, usp_a2a a, int u, int p);
long usp_a2a_recv_offset(const usp_config *c, usp_a2a a, int u, int p);

#endif
