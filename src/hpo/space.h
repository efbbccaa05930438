/*
 * space.h - hyperparameter search spaces with Optuna's distribution semantics.
 *
 * A distribution is one of Optuna's three classes, and its JSON text is exactly what
 * optuna.distributions.distribution_to_json() writes, so the journal and optuna-dashboard
 * understand our studies:
 *   FloatDistribution(low, high, log, step)   internal value = the float
 *   IntDistribution(low, high, log, step)     internal value = the integer, as a double
 *   CategoricalDistribution(choices)          internal value = index of the choice
 *
 *   HpoSpace sp;
 *   hpo_space_table3(&sp);                       // the paper's Table 3 space
 *   hpo_space_add_flag(&sp, "opt=cat:adamw,muon"); // more from a --param flag
 *   char *js = hpo_dist_to_json(&sp.params[0].dist);   // Optuna JSON, caller frees
 *   hpo_space_release(&sp);
 *
 * A space file is a JSON object {name: distribution}, each distribution in Optuna's
 * abbreviated form {"type": "float"|"int"|"categorical", "low", "high", "log", "step",
 * "choices"} or its full form {"name": "FloatDistribution", "attributes": {...}}.
 */
#ifndef EF_HPO_SPACE_H
#define EF_HPO_SPACE_H

#include <stdbool.h>

#include "core/status.h"

typedef enum { HPO_DIST_FLOAT = 0, HPO_DIST_INT, HPO_DIST_CATEGORICAL } HpoDistKind;

typedef struct {
    HpoDistKind kind;
    double low, high; // inclusive bounds (float/int); high already adjusted to the step grid
    double step;      // 0 = continuous float; int: >= 1
    bool log;
    int n_choices;       // categorical
    char **choices_json; // categorical: each choice as compact JSON text ("\"adamw\"", "1", ...)
} HpoDist;

typedef struct {
    char *name;
    HpoDist dist;
} HpoParam;

typedef struct {
    HpoParam *params; // in suggestion order
    int n;
} HpoSpace;

// Distributions ---------------------------------------------------------------------------

// Validates and normalises a float/int distribution the way Optuna's constructors do
// (low <= high, log needs low > 0 and no step, int steps >= 1, high snapped to the step grid).
// Errors: STATUS_ERR_ARG naming `what`.
Status hpo_dist_float(HpoDist *d, double low, double high, bool log, double step, const char *what);
Status hpo_dist_int(HpoDist *d, long long low, long long high, bool log, long long step,
                    const char *what);
// Categorical from JSON texts of the choices (copied). At least one choice.
Status hpo_dist_categorical(HpoDist *d, const char *const *choices_json, int n, const char *what);
void hpo_dist_release(HpoDist *d);
void hpo_dist_copy(HpoDist *dst, const HpoDist *src);
// Exactly equal (same class and attributes).
bool hpo_dist_equal(const HpoDist *a, const HpoDist *b);
// True when the distribution holds a single value (Optuna's single(); skipped by TPE).
bool hpo_dist_single(const HpoDist *d);
// Optuna's distribution_to_json() text; caller frees.
char *hpo_dist_to_json(const HpoDist *d);
// Parses Optuna's full or abbreviated JSON form. Errors: STATUS_ERR_FORMAT.
Status hpo_dist_from_json(HpoDist *d, const char *json_text, const char *what);
// Checks that an internal value is representable (in range, integral for ints, valid index).
bool hpo_dist_contains(const HpoDist *d, double internal);
// Writes the external value as text (float: %.17g, int: %lld, categorical: the choice, strings
// without quotes) into buf.
void hpo_dist_format(const HpoDist *d, double internal, char *buf, int cap);

// Spaces ----------------------------------------------------------------------------------

// The paper's Table 3 space: scale [0.5,2], rank int [8,64], lr log [1e-5,1e-3],
// temperature [0.5,8], alpha [0,1], weight_decay [0,2].
void hpo_space_table3(HpoSpace *sp);
// Adds "name=float:LOW:HIGH[:log|:step=S]", "name=int:LOW:HIGH[:log|:step=S]" or
// "name=cat:A,B,C" (choices that parse as numbers become numbers). Errors: STATUS_ERR_ARG.
Status hpo_space_add_flag(HpoSpace *sp, const char *flag);
// Loads a space file (see the header comment); "table3" names the built-in space.
Status hpo_space_load(HpoSpace *sp, const char *path);
// Appends a copy of dist under name. Errors: duplicate name.
Status hpo_space_add(HpoSpace *sp, const char *name, const HpoDist *dist);
int hpo_space_find(const HpoSpace *sp, const char *name);
void hpo_space_release(HpoSpace *sp);

#endif
