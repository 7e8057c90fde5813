/* gpp/netdesc.h - the network description: the JSON that names a network's
 * layers and how they connect.  It is the inline `model` of a job spec and
 * the "network" object stored in every .gppm checkpoint; the engine builds
 * networks from it (worker/nn) and writes it back after surgery.
 *
 * A network description is an object
 *
 *   {"input": [C, H, W],          optional in a job spec (taken from the data set)
 *    "classes": 10,               optional in a job spec (taken from the data set)
 *    "layers": [LAYER, ...]}
 *
 * or, in a job spec's `model`, just the array of layers.  Layers are in
 * topological order; each is an object with
 *
 *   "type"    one of: conv, bn, relu, maxpool, avgpool, global-avgpool, fc,
 *             concat, flatten, dropout, softmax-cross-entropy     (required)
 *   "name"    unique, [A-Za-z0-9_.-]{1,64}, not "input" (that names the data);
 *             default "<type><index>" (e.g. "conv0")
 *   "inputs"  array of earlier layer names, or "input" for the data; default:
 *             ["<previous layer>"] (["input"] for the first layer).  Every
 *             layer takes exactly 1 input except concat, which takes 2..16
 *             and has no default.
 *
 * and per type (defaults in brackets):
 *   conv      "out" 1..65536, "k" 1..31 (both required), "stride" 1..16 [1],
 *             "pad" 0..15 [0], "bias" bool [true]
 *   fc        "out" 1..1048576 (required), "bias" bool [true]
 *   maxpool, avgpool
 *             "k" 1..31 (required), "stride" 1..31 [k], "pad" 0..15 [0]
 *   bn        "eps" (0, 1) [1e-5], "momentum" (0, 1] [0.1]
 *   dropout   "p" [0, 1) [0.5]
 *   relu, global-avgpool, flatten, concat, softmax-cross-entropy: no fields
 * Integers are JSON numbers without a fractional part.  The object form may
 * carry "input": [C, H, W] (each 1..65536) and "classes" (2..100000).
 * 1..GPP_NET_MAX_LAYERS layers; unknown and duplicate fields are an error.
 * The last layer is usually softmax-cross-entropy; if it is absent the
 * engine adds one.
 *
 * Parameter tensors in a checkpoint are named "<layer>.weight", "<layer>.bias",
 * and for bn also "<layer>.running_mean", "<layer>.running_var" (the same
 * names and layouts as PyTorch: conv weight [OC, IC, K, K], fc weight [OUT, IN]).
 */
#ifndef GPP_NETDESC_H
#define GPP_NETDESC_H

#include <cjson/cJSON.h>

#include "gpp/error.h"

#define GPP_NET_MAX_LAYERS 1024
#define GPP_NET_NAME_MAX 64

/* Validate a network description: either an array of layers, or an object
 * with "layers" (and optional "input", "classes").  Checks types, ranges,
 * unknown fields, unique names and that every input names an earlier layer.
 * `path` prefixes field paths in errors: "model" gives "model[3].k" for the
 * array form and "model.layers[3].k" for the object form (NULL or "" gives
 * "[3].k" / "layers[3].k").  Returns 0, or GPP_EINVAL (GPP_ENOMEM) with *err
 * filled.  Shapes are checked by the engine. */
int gpp_netdesc_validate(const cJSON *desc, const char *path, gpp_error *err);

/* Return a new, validated copy of `desc` in canonical form: an object with
 * "layers" whose every layer has its defaults, "name" and "inputs" filled in
 * (plus "input"/"classes" when present), keys in a fixed order: "input",
 * "classes", "layers"; per layer "name", "type", "inputs", then the type's
 * fields in the order listed above.  Canonicalising a canonical description
 * gives it back unchanged.  NULL with *err filled on error.
 * The caller frees the result with cJSON_Delete. */
cJSON *gpp_netdesc_canonical(const cJSON *desc, const char *path, gpp_error *err);

#endif
