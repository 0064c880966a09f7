/* verify_wire.h: usp verify --wire-errors (verify_wire.c). */
#ifndef USP_VERIFY_WIRE_H
#define USP_VERIFY_WIRE_H

#include "cli.h"

/* Prints the error table of base's problem (its dtype, seq, heads, head_dim;
 * batch 1, causal, zigzag, kv_heads = heads) for ulysses 1, 2 x ring 1, 2, 4,
 * 8 and both wires. Returns the exit code (2: a shape the meshes refuse). */
int usp_verify_wire_errors(const usp_config *base, int json);

#endif
