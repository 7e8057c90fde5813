/* gpp/export.h - taking a model out of gppd: a .gppm checkpoint (gpp/ckpt.h)
 * written as an ONNX model, for ONNX Runtime, PyTorch's importers, TensorRT,
 * OpenVINO and the rest.  The ONNX protobuf code is generated at build time
 * by protoc-c from Debian's onnx.proto (package libonnx-dev); nothing here
 * encodes protobuf by hand.  (For PyTorch, deploy/python/gpp_torch.py builds
 * a torch.nn.Module from the same checkpoint.)
 *
 * The exported model (ARCHITECTURE.md, "Checkpoint format"):
 *   - ir_version 7, one opset import: the default domain at opset 13;
 *     producer_name "gppd", producer_version the gppd version;
 *   - graph input  "input":  float32 [N, C, H, W], N dynamic (dim_param "N"),
 *     C, H, W from the network's "input"; pixel values in [0, 1] (x / 255);
 *   - graph output "logits": float32 [N, classes], the class scores before
 *     the softmax;
 *   - initializers: the checkpoint's tensors under their own names
 *     ("conv1.weight", "bn1.running_var", ...), float32 raw data.  Optimiser
 *     state ("optim/...") is not exported.
 *
 * Normalisation.  When the checkpoint's JSON document carries
 *     "meta": {"normalize": {"mean": [m_0, ..., m_C-1], "std": [s_0, ..., s_C-1]}}
 * (per-channel mean and standard deviation of x / 255, as the data loaders
 * compute them: gpp_data_norm of gpp/data.h) the graph starts with
 *     Sub(input, "normalize:mean") -> Div(., "normalize:std")
 * with both constants shaped [1, C, 1, 1], so the model takes raw [0, 1]
 * pixels.  Each list has C numbers (or one, used for every channel), every
 * std > 0.  Without the key the graph applies no normalisation: the model
 * then expects whatever the network was trained on.
 *
 * Layers (gpp/netdesc.h) map onto ONNX operators so:
 *   conv            Conv (kernel_shape, strides, pads, group 1), bias when "bias"
 *   bn              BatchNormalization (inference: running statistics, epsilon);
 *                   on 4-D input or, after an fc, on [N, C]
 *   relu            Relu
 *   maxpool         MaxPool (pads, strides, ceil_mode 0)
 *   avgpool         AveragePool (pads, strides, count_include_pad 1, ceil_mode 0)
 *   global-avgpool  GlobalAveragePool ([N, C, 1, 1])
 *   fc              Gemm (transB 1), after a Flatten(axis 1) when its input
 *                   is 4-D (a conv, a pool, a global-avgpool)
 *   concat          Concat (axis 1)
 *   flatten         Flatten (axis 1)
 *   dropout         nothing: identity at inference
 *   softmax-cross-entropy   nothing: the output is its input, the logits
 * A 2-D tensor ([N, C] after an fc or a flatten) that reaches a layer that
 * needs 4-D (conv, pools) is reshaped to [N, C, 1, 1] by an Unsqueeze.  The
 * logits are the input of the softmax-cross-entropy layer (the last layer's
 * output when there is none), flattened to [N, classes] when they are 4-D.
 *
 * Checks (before anything is written): the network validates
 * (gpp_netdesc_canonical; an unknown layer type is an error naming it), has
 * an "input" shape, every shape infers (a window larger than its input, a
 * concat of different sizes), every tensor a layer needs is present with the
 * right shape, the logits count equals "classes" when given, and the
 * normalisation is well formed.  Errors come back through `err` with
 * field paths such as "network.layers[3].type", "tensors.conv1.weight",
 * "meta.normalize.std".
 */
#ifndef GPP_EXPORT_H
#define GPP_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "gpp/ckpt.h"
#include "gpp/error.h"

#define GPP_ONNX_IR_VERSION 7
#define GPP_ONNX_OPSET 13
#define GPP_ONNX_PRODUCER "gppd"
#define GPP_ONNX_INPUT_NAME "input"
#define GPP_ONNX_OUTPUT_NAME "logits"
#define GPP_ONNX_BATCH_PARAM "N"
/* Protobuf messages are limited to 2 GiB; larger models are refused
 * (GPP_ETOOBIG) rather than written with external data. */
#define GPP_ONNX_MAX_BYTES ((size_t)2147483647)

/* Export checkpoint `ck` as an ONNX model to `out_path`, written
 * atomically ("PATH.tmp.<pid>", fsync, rename; nothing left behind on
 * failure).  Returns 0; GPP_EINVAL (bad network, shape mismatch, bad
 * normalisation), GPP_ENOTFOUND (a tensor the network needs is missing),
 * GPP_EFORMAT (the JSON document is not what a .gppm holds),
 * GPP_ETOOBIG (over GPP_ONNX_MAX_BYTES), GPP_ENOMEM or GPP_EIO, with *err
 * naming the layer, tensor or field. */
int gpp_onnx_export(const gpp_ckpt *ck, const char *out_path, gpp_error *err);

/* As gpp_onnx_export, into a new buffer: *buf (free with free()) holds
 * *len bytes of the serialised ModelProto.  *buf is NULL and *len 0 on
 * failure. */
int gpp_onnx_export_buffer(const gpp_ckpt *ck, uint8_t **buf, size_t *len,
                           gpp_error *err);

/* What gpp_ckpt_check found in a usable checkpoint. */
typedef struct gpp_model_info {
    long long params;      /* weights + biases (bn: gamma + beta) */
    int C, H, W;           /* input shape of one sample */
    int classes;           /* logits per sample */
    size_t nodes;          /* graph nodes of its ONNX form */
} gpp_model_info;

/* Is `ck` a network gppd can run and export?  The checks of the ONNX
 * export: a valid "network" with an input shape, every tensor a layer needs
 * present with its shape, shapes that flow through the layers, a
 * normalisation that fits the input.  0 with *info (may be NULL) filled, or
 * the export's error (GPP_EINVAL, GPP_ENOTFOUND, GPP_EFORMAT, GPP_ETOOBIG,
 * GPP_ENOMEM) naming the layer, tensor or field. */
int gpp_ckpt_check(const gpp_ckpt *ck, gpp_model_info *info, gpp_error *err);

/* The `gpp-worker export` subcommand:
 *     export MODEL.gppm --onnx OUT.onnx      (also --onnx=OUT.onnx)
 * argv[0] is the subcommand's name ("export"), as git passes it; wire it as
 *     if (argc > 1 && strcmp(argv[1], "export") == 0)
 *         return gpp_export_main(argc - 1, argv + 1);
 * Reads the checkpoint, exports it and prints one line on stdout ("wrote
 * OUT.onnx: K nodes, P parameters, input [N,C,H,W], logits [N,classes]").
 * Returns the process exit status: 0 done, 1 the export failed (the
 * message on stderr), 2 bad usage (usage on stderr); -h/--help prints the
 * usage on stdout and returns 0. */
int gpp_export_main(int argc, char **argv);

#endif
