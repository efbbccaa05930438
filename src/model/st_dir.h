/*
 * st_dir.h - the safetensors weights of a Hugging Face model directory: model.safetensors
 * alone, or every shard that model.safetensors.index.json's "weight_map" names
 * (model-00001-of-00004.safetensors, ...). One lookup by tensor name over all of them, a
 * "used" mark per tensor, and a final check that nothing was left over (a tensor the
 * config does not explain means the config and the weights disagree).
 *
 *   StDir d;
 *   if (st_dir_open(&d, "models/llama", m) != STATUS_OK) ...  // mappings handed to m
 *   Tensor w;  st_dir_bind(&d, m, &w, "model.norm.weight", dim, 0);   // view, checked
 *   const char *file;  const SafeTensor *t = st_dir_find(&d, "x.qweight", &file);
 *   st_dir_use(&d, "x.qweight");
 *   s = st_dir_check_unused(&d);
 *   st_dir_release(&d);
 *
 * With a Model, each shard's mapping moves into m->files (tensors bound from it stay views
 * into it after st_dir_release). st_dir_wrap gives the same interface over one SafeTensors
 * the caller opened and keeps (tests, fuzzing).
 */
#ifndef EF_ST_DIR_H
#define EF_ST_DIR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"
#include "model/safetensors.h"

typedef struct {
    SafeTensors *st;      // (n_st) open shards
    char **shard_names;   // (n_st) file names inside the directory
    unsigned char **used; // (n_st) per tensor: consumed by the loader
    int n_st;
    bool borrowed; // st_dir_wrap: st belongs to the caller
    void *index;   // json_t: "weight_map" of the sharded index, or NULL
    char *desc;    // the file errors name: model.safetensors or the index
} StDir;

// Opens DIR's weights. m: when not NULL, takes over each shard's mapping (m->files).
// Errors: no weights file (pytorch_model.bin named as unsupported), bad index JSON, a
// weight_map entry that is not a plain file name in DIR, a missing shard, a corrupt shard.
Status st_dir_open(StDir *d, const char *dir, Model *m);

// One already-open file as a directory of one shard; st stays the caller's.
void st_dir_wrap(StDir *d, const SafeTensors *st);

void st_dir_release(StDir *d);

// The tensor NAME, or NULL. *file (may be NULL): the shard's path, for messages.
const SafeTensor *st_dir_find(const StDir *d, const char *name, const char **file);

// Whether NAME is part of the weights: in the index's weight_map (found or not), or, without
// an index, in the file. For choosing between alternative layouts (packed or float).
bool st_dir_listed(const StDir *d, const char *name);

// The STATUS_ERR_FORMAT error for a tensor the loader needs and st_dir_find did not find:
// "missing from <file>", or, when the index names a shard for it, that the shard lacks it.
// WHAT: how the loader calls it ("tensor", "GPTQ tensor").
Status st_dir_missing(const StDir *d, const char *what, const char *name);

// Marks NAME as consumed when present (optional tensors, tensors read by other code).
void st_dir_use(StDir *d, const char *name);

// Binds float tensor NAME (F32/F16/BF16) of shape (d0) or (d0, d1) (d1 = 0: 1-D) to *t as
// a view into its mapping (copied into m's memory when misaligned) and marks it used.
// Errors name the tensor and its file: missing (or absent from the shard the index names),
// another dtype, another shape.
Status st_dir_bind(StDir *d, Model *m, Tensor *t, const char *name, int64_t d0, int64_t d1);

// STATUS_ERR_FORMAT naming the first tensor never used, with its file.
Status st_dir_check_unused(const StDir *d);

#endif
