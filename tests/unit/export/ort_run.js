// Run exported ONNX models in ONNX Runtime (onnxruntime-node, CPU) on the
// first COUNT images of an IDX image file (Fashion-MNIST's t10k, .gz or not),
// read here independently of the Python side, scaled to [0, 1].
//
//   node ort_run.js IMAGES.idx[.gz] COUNT OUTDIR MODEL.onnx...
//
// For each MODEL it writes OUTDIR/<base>.logits.bin (float32, COUNT x classes,
// batch of COUNT) and OUTDIR/<base>.logits5.bin (the first 5 images as a batch
// of 5: the batch dimension is dynamic), and OUTDIR/ort_report.json with the
// session's input/output names and the output dims.  check_onnx.py compares.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

function readIdxImages(file, count) {
  let buf = fs.readFileSync(file);
  if (file.endsWith('.gz')) buf = zlib.gunzipSync(buf);
  if (buf.length < 16 || buf.readUInt32BE(0) !== 0x00000803)
    throw new Error(`${file}: not an IDX3 ubyte image file`);
  const n = buf.readUInt32BE(4), rows = buf.readUInt32BE(8), cols = buf.readUInt32BE(12);
  if (count > n) throw new Error(`${file}: ${n} images, ${count} wanted`);
  if (buf.length < 16 + n * rows * cols) throw new Error(`${file}: truncated`);
  const x = new Float32Array(count * rows * cols);
  for (let i = 0; i < x.length; i++) x[i] = buf[16 + i] / 255;
  return { x, rows, cols };
}

async function main() {
  const [images, countText, outdir, ...models] = process.argv.slice(2);
  const count = Number.parseInt(countText, 10);
  if (!images || !(count >= 5) || !outdir || models.length === 0) {
    process.stderr.write('usage: node ort_run.js IMAGES.idx[.gz] COUNT(>=5) OUTDIR MODEL.onnx...\n');
    process.exit(2);
  }
  const { x, rows, cols } = readIdxImages(images, count);
  const report = { ort_version: ort.env.versions ? ort.env.versions.common : null,
                   images: count, rows, cols, models: {} };
  for (const model of models) {
    const base = path.basename(model, '.onnx');
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
    });
    const entry = { inputNames: session.inputNames, outputNames: session.outputNames };
    for (const [n, file] of [[count, `${base}.logits.bin`], [5, `${base}.logits5.bin`]]) {
      const input = new ort.Tensor('float32', x.subarray(0, n * rows * cols), [n, 1, rows, cols]);
      const out = await session.run({ input });
      const logits = out.logits;
      if (!logits) throw new Error(`${model}: no "logits" output`);
      entry[`dims${n === count ? '' : n}`] = Array.from(logits.dims, Number);
      const data = Float32Array.from(logits.data);
      fs.writeFileSync(path.join(outdir, file), Buffer.from(data.buffer));
    }
    report.models[base] = entry;
    if (session.release) await session.release();
  }
  fs.writeFileSync(path.join(outdir, 'ort_report.json'), JSON.stringify(report, null, 1));
}

main().catch((e) => {
  process.stderr.write(`ort_run: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
