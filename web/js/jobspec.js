// The job spec fields, their defaults and rules, as include/gpp/jobspec.h
// documents them.  The server is the judge of every rule (the form shows
// its error next to the field); this table only drives the form: what to
// show, which default to pre-fill, and how to turn text into JSON.
//
// type: 'str' | 'int' | 'num' | 'bool' | 'enum' | 'labels' | 'ints6' | 'ref'
// nullable: an empty input means null (the default).

export const ZOO = ['lenet5', 'lenet300-100', 'vgg-small', 'vgg16-cifar', 'inception-base'];

export const SECTIONS = [
  {
    key: '',
    title: 'Job',
    open: true,
    fields: [
      { path: 'dataset', type: 'ref', required: true, def: 'fashion-mnist', list: 'datasets',
        rule: 'a registered data set name, or JSON {"format": "idx" | "cifar10-bin", "path": "/abs/dir"}' },
      { path: 'model', type: 'ref', required: true, def: 'lenet5', list: 'zoo',
        rule: 'a zoo name, JSON of an inline network, or {"checkpoint": "JOB_ID or sha256"}' },
      { path: 'name', type: 'str', def: null, placeholder: 'model-dataset',
        rule: '1–128 characters; empty: "<model>-<dataset>"' },
      { path: 'device', type: 'enum', def: 'any', options: ['any', 'cpu', 'gpu'], rule: 'which workers may run it' },
      { path: 'priority', type: 'int', def: 0, rule: 'integer −1000…1000; higher runs first' },
      { path: 'iterations', type: 'int', def: 10, rule: 'integer 0…100: push + prune rounds at most (the stop rule usually ends the loop sooner)' },
      { path: 'seed', type: 'int', def: 1, rule: 'integer 0…2147483647' },
      { path: 'max_restarts', type: 'int', def: 3, rule: 'integer 0…100: retries of a failed stage' },
      { path: 'labels', type: 'labels', def: {}, placeholder: 'gpu=a100, site=lab2',
        rule: 'key=value pairs a worker must have (up to 16)' },
    ],
  },
  {
    key: 'train',
    title: 'Train',
    open: true,
    fields: [
      { path: 'train.epochs', type: 'int', def: 2, rule: 'integer 0…1000' },
      { path: 'train.batch_size', type: 'int', def: 64, rule: 'integer 1…4096' },
      { path: 'train.lr', type: 'num', def: 0.01, rule: '(0, 10]' },
      { path: 'train.momentum', type: 'num', def: 0.9, rule: '[0, 1)' },
      { path: 'train.nesterov', type: 'bool', def: false, rule: 'Nesterov momentum' },
      { path: 'train.weight_decay', type: 'num', def: 0.0005, rule: '[0, 1)' },
      { path: 'train.schedule', type: 'enum', def: 'cosine', options: ['constant', 'step', 'cosine'], rule: 'learning-rate schedule' },
      { path: 'train.step_epochs', type: 'int', def: 1, rule: 'integer 1…1000: step schedule period' },
      { path: 'train.gamma', type: 'num', def: 0.1, rule: '(0, 1]: step schedule factor' },
    ],
  },
  {
    key: 'grow',
    title: 'Grow',
    fields: [
      { path: 'grow.enabled', type: 'bool', def: false, rule: 'add Inception modules while they pay' },
      { path: 'grow.max_modules', type: 'int', def: 4, rule: 'integer 0…16' },
      { path: 'grow.min_gain', type: 'num', def: 0.002, rule: '[0, 1]: validation accuracy a module must add' },
      { path: 'grow.epochs', type: 'int', def: 1, rule: 'integer 0…1000' },
      { path: 'grow.widths', type: 'ints6', def: null, placeholder: 'previous module’s widths',
        rule: '6 integers 1…4096: 1×1, 3×3-reduce, 3×3, double-3×3-reduce, double-3×3, pool-proj' },
    ],
  },
  {
    key: 'push',
    title: 'Push',
    fields: [
      { path: 'push.epochs', type: 'int', def: 1, rule: 'integer 0…1000' },
      { path: 'push.lambda', type: 'num', def: 1, rule: '[0, 100]: scales alpha, beta, gamma' },
      { path: 'push.lambda_decay', type: 'num', def: 1, rule: '[0, 1]: push i uses lambda × decay^i' },
      { path: 'push.alpha', type: 'num', def: 0.02, rule: '[0, 100]: separation term' },
      { path: 'push.beta', type: 'num', def: 0.01, rule: '[0, 100]: covariance term' },
      { path: 'push.gamma', type: 'num', def: 0.1, rule: '[0, 100]: alignment term' },
      { path: 'push.separation', type: 'enum', def: 'diag', options: ['diag', 'eigen'], rule: 'separation measure' },
      { path: 'push.eigen_k', type: 'int', nullable: true, def: null, placeholder: 'classes − 1', rule: 'integer 1…4096' },
      { path: 'push.eigen_reg', type: 'num', def: 1, rule: '(0, 100]: eigen form: λ = eigen_reg · tr(Sw) / M' },
      { path: 'push.keep_fraction', type: 'num', def: 0.5, rule: '(0, 1]' },
      { path: 'push.ramp_epochs', type: 'num', def: 1, rule: '[0, 100]' },
      { path: 'push.ema', type: 'num', def: 0.9, rule: '[0, 1)' },
      { path: 'push.eps', type: 'num', def: 1e-6, rule: '(0, 1]' },
      { path: 'push.min_per_class', type: 'int', def: 2, rule: 'integer 2…1024' },
      { path: 'push.lr', type: 'num', nullable: true, def: null, placeholder: 'train.lr', rule: '(0, 10]' },
    ],
  },
  {
    key: 'prune',
    title: 'Prune',
    fields: [
      { path: 'prune.threshold', type: 'enum', def: 'ratio', options: ['eta', 'ratio'], rule: 'how channels are chosen' },
      { path: 'prune.ratio', type: 'num', def: 0.3, rule: '(0, 1): fraction pruned per round' },
      { path: 'prune.eta', type: 'num', def: 0.1, rule: '(0, 10]' },
      { path: 'prune.eta_step', type: 'num', def: 0.1, rule: '[0, 10]' },
      { path: 'prune.max_layer_fraction', type: 'num', def: 0.5, rule: '(0, 1]' },
      { path: 'prune.min_channels', type: 'int', def: 1, rule: 'integer 1…4096' },
      { path: 'prune.max_accuracy_drop', type: 'num', def: 0.01, rule: '[0, 1]' },
      { path: 'prune.samples_per_class', type: 'int', def: 10, rule: 'integer 1…10000' },
      { path: 'prune.finetune_epochs', type: 'int', def: 1, rule: 'integer 0…1000' },
      { path: 'prune.final_finetune_epochs', type: 'int', def: 9, rule: 'integer 0…1000: the final recovery: more fine-tuning of the final model at its final widths (in the last round, or a finetune stage when the loop stops early)' },
      { path: 'prune.distill', type: 'num', def: 0, rule: '[0, 100]: distillation weight in the fine-tunes (0 = off)' },
      { path: 'prune.distill_temperature', type: 'num', def: 4, rule: '(0, 100]' },
      { path: 'prune.reconstruct', type: 'bool', def: false, rule: 'least-squares reconstruction after pruning' },
      { path: 'prune.reconstruct_samples', type: 'int', def: 512, rule: 'integer 16…65536' },
      { path: 'prune.criterion', type: 'enum', def: 'gpp', options: ['gpp', 'l1', 'random'], rule: 'channel ranking' },
      { path: 'prune.compare_cut', type: 'bool', def: true, rule: 'also evaluate L1 and random cuts to the same widths (cut_compare)' },
      { path: 'prune.lr', type: 'num', nullable: true, def: null, placeholder: 'train.lr', rule: '(0, 10]' },
      { path: 'prune.final_lr', type: 'num', nullable: true, def: null, placeholder: 'prune.lr', rule: '(0, 10]: the final recovery\'s (and the L1/random baselines\')' },
      { path: 'prune.bn_recalibrate', type: 'int', def: 1024, rule: 'integer 0…65536: training images that re-estimate batch-norm statistics after each cut (0 = off)' },
    ],
  },
  {
    key: 'stop',
    title: 'Stop',
    fields: [
      { path: 'stop.max_accuracy_drop', type: 'num', def: 0.005, rule: '[0, 1]: allowed drop of validation accuracy from the baseline (0.005 = half a point); the loop stops past it' },
      { path: 'stop.target_params', type: 'int', nullable: true, def: null, placeholder: 'none', rule: 'integer ≥ 1: stop at this size' },
      { path: 'stop.recover_epochs', type: 'int', def: 9, rule: 'integer 0…1000: a prune that falls below the allowed drop trains this many more epochs before the stop rule judges it (0 = judge at once)' },
    ],
  },
  {
    key: 'data',
    title: 'Data',
    fields: [
      { path: 'data.train_limit', type: 'int', nullable: true, def: null, placeholder: 'all', rule: 'integer ≥ 1: samples used' },
      { path: 'data.test_limit', type: 'int', nullable: true, def: null, placeholder: 'all', rule: 'integer ≥ 1' },
      { path: 'data.val_fraction', type: 'num', def: 0.1, rule: '[0, 0.9]: validation share (of the training set, or of the test set: val_from)' },
      { path: 'data.val_from', type: 'enum', def: 'auto', options: ['auto', 'train', 'test'],
        rule: 'where the validation images come from; auto: the test set for an uploaded model (it may have trained on every training image), else the training set' },
      { path: 'data.augment', type: 'enum', def: 'auto', options: ['auto', 'none', 'crop-flip'], rule: 'augmentation' },
      { path: 'data.normalize', type: 'bool', def: true, rule: 'normalise inputs' },
    ],
  },
];

export const FIELDS = SECTIONS.flatMap((s) => s.fields);

/** The input id of a field path ("prune.ratio" -> "f-prune-ratio"). */
export function inputId(path) {
  return 'f-' + path.replace(/[^A-Za-z0-9_]/g, '-');
}

/** The text an input shows for a value of a field. */
export function toText(f, v) {
  if (v === null || v === undefined) return '';
  if (f.type === 'labels') {
    return Object.entries(v).map(([k, x]) => `${k}=${x}`).join(', ');
  }
  if (f.type === 'ints6') return Array.isArray(v) ? v.join(', ') : '';
  if (f.type === 'ref') return typeof v === 'string' ? v : JSON.stringify(v);
  return String(v);
}

/** A client-side complaint about the form of a value (not its range). */
export class FieldError extends Error {
  constructor(path, message) {
    super(message);
    this.field = path;
  }
}

/**
 * Read one field's value from its text/checked state.  Returns
 * {set: bool, value} where set is false when the field is left at its
 * default (so the server fills it).  Throws FieldError for text that is not
 * of the field's type; ranges are the server's to check.
 */
export function readField(f, text, checked) {
  const t = typeof text === 'string' ? text.trim() : text;
  switch (f.type) {
    case 'bool':
      return { set: checked !== f.def, value: !!checked };
    case 'enum':
      return { set: t !== f.def, value: t };
    case 'str':
      return { set: t !== '', value: t };
    case 'ref': {
      if (t === '') return { set: !!f.required, value: '' };
      if (t[0] === '{' || t[0] === '[') {
        try {
          return { set: true, value: JSON.parse(t) };
        } catch (e) {
          throw new FieldError(f.path, `${f.path}: not valid JSON (${e.message})`);
        }
      }
      return { set: true, value: t };
    }
    case 'int':
    case 'num': {
      if (t === '') {
        if (f.nullable || f.def === null) return { set: false, value: null };
        return { set: false, value: f.def };
      }
      if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) {
        throw new FieldError(f.path, `${f.path} must be a number, got "${t}"`);
      }
      const v = Number(t);
      return { set: v !== f.def, value: v };
    }
    case 'labels': {
      if (t === '') return { set: false, value: {} };
      const out = {};
      for (const part of t.split(',')) {
        const p = part.trim();
        if (!p) continue;
        const eq = p.indexOf('=');
        if (eq <= 0) throw new FieldError(f.path, `labels: "${p}" is not key=value`);
        out[p.slice(0, eq).trim()] = p.slice(eq + 1).trim();
      }
      return { set: Object.keys(out).length > 0, value: out };
    }
    case 'ints6': {
      if (t === '') return { set: false, value: null };
      const parts = t.split(/[\s,]+/).filter(Boolean);
      if (parts.some((p) => !/^\d+$/.test(p))) {
        throw new FieldError(f.path, `${f.path}: a list of whole numbers, like 64, 96, 128, 16, 32, 32`);
      }
      return { set: true, value: parts.map(Number) };
    }
    default:
      return { set: false, value: null };
  }
}

/** Put value at a dotted path of obj ("prune.ratio"). */
export function setPath(obj, path, value) {
  const keys = path.split('.');
  let o = obj;
  for (let i = 0; i < keys.length - 1; i++) {
    if (typeof o[keys[i]] !== 'object' || o[keys[i]] === null) o[keys[i]] = {};
    o = o[keys[i]];
  }
  o[keys[keys.length - 1]] = value;
}

/** Value at a dotted path of obj, or undefined. */
export function getPath(obj, path) {
  let o = obj;
  for (const k of path.split('.')) {
    if (o === null || typeof o !== 'object') return undefined;
    o = o[k];
  }
  return o;
}

/**
 * The form field an API error's field path belongs to: the exact path, else
 * the longest known prefix ("model[3].k" -> "model", "labels.gpu" -> "labels").
 * '' when none.
 */
export function fieldFor(path) {
  if (!path) return '';
  const known = new Set(FIELDS.map((f) => f.path));
  let p = path;
  while (p) {
    if (known.has(p)) return p;
    const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
    if (cut <= 0) break;
    p = p.slice(0, cut);
  }
  return known.has(p) ? p : '';
}
