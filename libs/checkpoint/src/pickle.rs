//! The pickler: [`crate::Value`] to pickle protocol 2 as `torch.save` writes it.
//!
//! torch/serialization.py: `_save` pickles with `pickle_protocol=2` and a `persistent_id` that replaces
//! each tensor storage by `('storage', torch.FloatStorage, key, location, numel)`, the storage's bytes
//! going to `data/KEY` in the zip. The opcodes are those of CPython's C pickler (Modules/_pickle.c,
//! which is `pickle.Pickler`) at protocol 2: every str, dict, list, tuple and reduced object memoized with
//! BINPUT, globals fetched again with BINGET, items in its batches; so a value without tensors pickles to
//! the bytes `pickle.dumps(value, protocol=2)` gives.

use crate::{Dtype, Tensor, Value};
use std::collections::HashMap;
use std::sync::Arc;

const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const LONG1: u8 = 0x8a;
const BINFLOAT: u8 = b'G';
const BINUNICODE: u8 = b'X';
const EMPTY_DICT: u8 = b'}';
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
const EMPTY_LIST: u8 = b']';
const APPEND: u8 = b'a';
const APPENDS: u8 = b'e';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const BINPERSID: u8 = b'Q';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';

/// Modules/_pickle.c: `BATCHSIZE`, the most items one APPENDS or SETITEMS adds.
const BATCH_SIZE: usize = 1000;

/// A pickled object: the pickle's bytes and the storages it refers to, `storages[k]` being the storage
/// with key `k` (its bytes are `ARCHIVE/data/k`).
pub(crate) struct Pickled {
    pub bytes: Vec<u8>,
    pub storages: Vec<Arc<Tensor>>,
}

/// Pickles `value`; tensors that are one `Arc` share one storage, as the `state_dict` entries of one
/// parameter (nnU-Net's alias keys) share one torch storage.
pub(crate) fn pickle(value: &Value) -> Pickled {
    let mut pickler = Pickler {
        out: vec![PROTO, 2],
        memo_size: 0,
        shared: HashMap::new(),
        storages: Vec::new(),
        storage_keys: HashMap::new(),
    };
    pickler.value(value);
    pickler.out.push(STOP);
    Pickled { bytes: pickler.out, storages: pickler.storages }
}

/// The objects pickled once and fetched from the memo after: globals (one object each in Python) and
/// the strings of torch's persistent ids (`'storage'` and `'cpu'` interned, each storage's key string
/// made once by `_save`'s `id_map`).
#[derive(PartialEq, Eq, Hash)]
enum Shared {
    Global(&'static str, &'static str),
    Str(String),
}

struct Pickler {
    out: Vec<u8>,
    memo_size: u32,
    shared: HashMap<Shared, u32>,
    storages: Vec<Arc<Tensor>>,
    /// The storage key of each tensor in `storages`, by address (`storages` keeps the address taken).
    storage_keys: HashMap<*const Tensor, usize>,
}

impl Pickler {
    fn value(&mut self, value: &Value) {
        match value {
            Value::None => self.out.push(NONE),
            Value::Bool(b) => self.out.push(if *b { NEWTRUE } else { NEWFALSE }),
            Value::Int(i) => self.int(*i),
            Value::Float(f) => {
                self.out.push(BINFLOAT);
                self.out.extend(f.to_be_bytes());
            }
            Value::Str(s) => self.str(s),
            // Modules/_pickle.c: `save_bytes` below protocol 3: `_codecs.encode(str(obj, 'latin1'), 'latin1')`
            Value::Bytes(bytes) => {
                self.global("_codecs", "encode");
                let latin1: String = bytes.iter().map(|&b| char::from(b)).collect();
                self.tuple(&[Value::Str(latin1), Value::Str("latin1".into())]);
                self.out.push(REDUCE);
                self.memoize();
            }
            // Modules/_pickle.c: `batch_list_exact`: one item APPENDed, more in batches of MARK ... APPENDS
            Value::List(items) => {
                self.out.push(EMPTY_LIST);
                self.memoize();
                if let [item] = &items[..] {
                    self.value(item);
                    self.out.push(APPEND);
                } else {
                    for batch in items.chunks(BATCH_SIZE) {
                        self.out.push(MARK);
                        batch.iter().for_each(|item| self.value(item));
                        self.out.push(APPENDS);
                    }
                }
            }
            Value::Tuple(items) => self.tuple(items),
            // Modules/_pickle.c: `batch_dict_exact`: one entry SETITEM, more in batches of MARK ... SETITEMS,
            // followed by an empty batch when the last one was full
            Value::Dict(entries) => {
                self.out.push(EMPTY_DICT);
                self.memoize();
                if let [(key, value)] = &entries[..] {
                    self.set_item(key, value);
                } else if !entries.is_empty() {
                    for batch in entries.chunks(BATCH_SIZE) {
                        self.set_items(batch);
                    }
                    if entries.len().is_multiple_of(BATCH_SIZE) {
                        self.set_items(&[]);
                    }
                }
            }
            // collections.OrderedDict.__reduce__: the class called without arguments, then the items, which
            // Modules/_pickle.c: `batch_dict` (an iterator's) writes in batches, a batch of one as SETITEM
            Value::OrderedDict(entries) => {
                self.empty_ordered_dict();
                for batch in entries.chunks(BATCH_SIZE) {
                    match batch {
                        [(key, value)] => self.set_item(key, value),
                        _ => self.set_items(batch),
                    }
                }
            }
            Value::Tensor(tensor) => self.tensor(tensor),
            // torch.device.__reduce__: `torch.device(type)` or `torch.device(type, index)`
            Value::Device(device) => {
                self.global("torch", "device");
                let args = match device.split_once(':').and_then(|(kind, index)| Some((kind, index.parse().ok()?))) {
                    Some((kind, index)) => vec![Value::Str(kind.into()), Value::Int(index)],
                    None => vec![Value::Str(device.clone())],
                };
                self.tuple(&args);
                self.out.push(REDUCE);
                self.memoize();
            }
        }
    }

    /// Modules/_pickle.c: `save_long`: the shortest of BININT1, BININT2, BININT and LONG1.
    fn int(&mut self, i: i64) {
        if let Ok(byte) = u8::try_from(i) {
            self.out.extend([BININT1, byte]);
        } else if let Ok(short) = u16::try_from(i) {
            self.out.push(BININT2);
            self.out.extend(short.to_le_bytes());
        } else if let Ok(int) = i32::try_from(i) {
            self.out.push(BININT);
            self.out.extend(int.to_le_bytes());
        } else {
            // two's complement, little-endian, without the sign bytes the value does not need
            let bytes = i.to_le_bytes();
            let mut len = bytes.len();
            while len > 1
                && ((bytes[len - 1] == 0 && bytes[len - 2] < 0x80)
                    || (bytes[len - 1] == 0xff && bytes[len - 2] >= 0x80))
            {
                len -= 1;
            }
            self.out.extend([LONG1, len as u8]);
            self.out.extend(&bytes[..len]);
        }
    }

    fn str(&mut self, s: &str) {
        self.out.push(BINUNICODE);
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
        self.memoize();
    }

    /// Modules/_pickle.c: `save_tuple`: EMPTY_TUPLE (not memoized), TUPLE1..3, or MARK ... TUPLE.
    fn tuple(&mut self, items: &[Value]) {
        if items.is_empty() {
            self.out.push(EMPTY_TUPLE);
            return;
        }
        if items.len() > 3 {
            self.out.push(MARK);
        }
        items.iter().for_each(|item| self.value(item));
        self.out.push(match items.len() {
            1 => TUPLE1,
            2 => TUPLE2,
            3 => TUPLE3,
            _ => TUPLE,
        });
        self.memoize();
    }

    fn set_item(&mut self, key: &Value, value: &Value) {
        self.value(key);
        self.value(value);
        self.out.push(SETITEM);
    }

    /// One batch: MARK, the entries, SETITEMS.
    fn set_items(&mut self, batch: &[(Value, Value)]) {
        self.out.push(MARK);
        for (key, value) in batch {
            self.value(key);
            self.value(value);
        }
        self.out.push(SETITEMS);
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(EMPTY_TUPLE);
        self.out.push(REDUCE);
        self.memoize();
    }

    /// torch/_tensor.py: `Tensor._reduce_ex_internal` for a dense CPU tensor:
    /// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks)`, the storage as torch/serialization.py: `_save`'s `persistent_id`.
    fn tensor(&mut self, tensor: &Arc<Tensor>) {
        let key = *self.storage_keys.entry(Arc::as_ptr(tensor)).or_insert_with(|| {
            self.storages.push(Arc::clone(tensor));
            self.storages.len() - 1
        });
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(MARK);
        self.out.push(MARK);
        self.shared_str("storage");
        self.global("torch", storage_type(tensor.dtype));
        self.shared_str(&key.to_string());
        self.shared_str("cpu");
        self.int(tensor.numel() as i64);
        self.out.push(TUPLE);
        self.memoize();
        self.out.push(BINPERSID);
        self.int(0);
        let mut stride = vec![1; tensor.shape.len()];
        for d in (1..tensor.shape.len()).rev() {
            stride[d - 1] = stride[d] * tensor.shape[d];
        }
        let ints = |values: &[usize]| values.iter().map(|&v| Value::Int(v as i64)).collect::<Vec<_>>();
        self.tuple(&ints(&tensor.shape));
        self.tuple(&ints(&stride));
        self.out.push(NEWFALSE);
        self.empty_ordered_dict();
        self.out.push(TUPLE);
        self.memoize();
        self.out.push(REDUCE);
        self.memoize();
    }

    fn global(&mut self, module: &'static str, name: &'static str) {
        if !self.fetch(&Shared::Global(module, name)) {
            self.out.push(GLOBAL);
            self.out.extend(format!("{module}\n{name}\n").as_bytes());
            self.shared.insert(Shared::Global(module, name), self.memo_size);
            self.memoize();
        }
    }

    fn shared_str(&mut self, s: &str) {
        if !self.fetch(&Shared::Str(s.into())) {
            self.shared.insert(Shared::Str(s.into()), self.memo_size);
            self.str(s);
        }
    }

    /// Writes BINGET for an object already memoized; false when it is not.
    fn fetch(&mut self, shared: &Shared) -> bool {
        let Some(&index) = self.shared.get(shared) else { return false };
        match u8::try_from(index) {
            Ok(index) => self.out.extend([BINGET, index]),
            Err(_) => {
                self.out.push(LONG_BINGET);
                self.out.extend(index.to_le_bytes());
            }
        }
        true
    }

    /// Modules/_pickle.c: `memo_put`: stores the object on top of the stack under the next index.
    fn memoize(&mut self) {
        match u8::try_from(self.memo_size) {
            Ok(index) => self.out.extend([BINPUT, index]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend(self.memo_size.to_le_bytes());
            }
        }
        self.memo_size += 1;
    }
}

/// The legacy storage class torch/storage.py: `TypedStorage._pickle_storage_type` names for a dtype.
fn storage_type(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F64 => "DoubleStorage",
        Dtype::F32 => "FloatStorage",
        Dtype::F16 => "HalfStorage",
        Dtype::BF16 => "BFloat16Storage",
        Dtype::I64 => "LongStorage",
        Dtype::I32 => "IntStorage",
        Dtype::I16 => "ShortStorage",
        Dtype::I8 => "CharStorage",
        Dtype::U8 => "ByteStorage",
        Dtype::Bool => "BoolStorage",
    }
}
