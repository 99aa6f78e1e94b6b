// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Keeping context accesses in the shape the verifier accepts: it allows
 * only ctx + constant offset, with the field's own width. */
#ifndef MW_CTX_H
#define MW_CTX_H

/* Makes ctx opaque to the compiler, so it cannot keep a pointer into the
 * context computed earlier (e.g. for a write after reads). */
#define mw_ctx_barrier(ctx) asm volatile("" : "+r"(ctx))

/* One load of exactly this field: the compiler may neither merge it with a
 * load of a neighbouring field nor move it into a branch. */
#define MW_CTX_READ(field) (*(volatile typeof(field) *)&(field))

#endif /* MW_CTX_H */
