/*
 * prune.h - cut a smaller student from a model by keeping a subset of its decoder layers
 * (embedding, final norm, lm_head and tokenizer stay), the usual start for a distilled
 * student that shares the teacher's tokenizer.
 *
 *   int keep[] = {0, 4};
 *   if (prune_keep_layers(&m, keep, 2) == STATUS_OK) model_save_hf(&m, "student", DTYPE_F32);
 */
#ifndef EF_PRUNE_H
#define EF_PRUNE_H

#include "core/status.h"
#include "model/llama.h"

// Keeps layers keep[0..n) (strictly increasing, each in [0, L)) in that order; the others
// are dropped (their weights stay owned by the model until model_release). Errors:
// STATUS_ERR_ARG naming the bad index; the model is unchanged then.
Status prune_keep_layers(Model *m, const int *keep, int n);

// Parses "0,4" or "0-2,5" into a new heap array (*keep, *n). STATUS_ERR_ARG on bad syntax.
Status prune_parse_layers(const char *list, int **keep, int *n);

#endif
