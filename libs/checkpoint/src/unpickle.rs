//! The restricted unpickler: pickle opcodes to [`crate::Value`], with an allow-list of globals.
//!
//! Python's `pickle.Unpickler` (Lib/pickle.py: `_Unpickler`) calls whatever a pickle names; this one
//! only builds values. The globals it knows are the ones `torch.save` writes for nnU-Net's checkpoint
//! dict (nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: `save_checkpoint`), and each is
//! interpreted here, by name, as what it would build; any other global is refused before anything
//! else happens. Containers live in an arena and are referred to by index, so that a memoized list that
//! is appended to later is the same list everywhere (as in Python), cycles and deep nesting cost no
//! recursion while unpickling, and dropping the state is flat.

use crate::{Dtype, Tensor, Value};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Containers deeper than this are refused (a checkpoint's plans nest a few levels).
const MAX_DEPTH: usize = 100;

/// The globals a pickle may name, each with the Python path that names it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(Dtype),
    Device,
    CodecsEncode,
    NumpyScalar,
    NumpyDtype,
}

/// The allowed globals (module, name); docs/formats.md lists the same.
const ALLOWED_GLOBALS: [(&str, &str, Global); 18] = [
    ("collections", "OrderedDict", Global::OrderedDict),
    ("torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2),
    ("torch._utils", "_rebuild_parameter", Global::RebuildParameter),
    ("torch", "FloatStorage", Global::Storage(Dtype::F32)),
    ("torch", "HalfStorage", Global::Storage(Dtype::F16)),
    ("torch", "BFloat16Storage", Global::Storage(Dtype::BF16)),
    ("torch", "DoubleStorage", Global::Storage(Dtype::F64)),
    ("torch", "LongStorage", Global::Storage(Dtype::I64)),
    ("torch", "IntStorage", Global::Storage(Dtype::I32)),
    ("torch", "ShortStorage", Global::Storage(Dtype::I16)),
    ("torch", "CharStorage", Global::Storage(Dtype::I8)),
    ("torch", "ByteStorage", Global::Storage(Dtype::U8)),
    ("torch", "BoolStorage", Global::Storage(Dtype::Bool)),
    ("torch", "device", Global::Device),
    ("_codecs", "encode", Global::CodecsEncode),
    ("numpy._core.multiarray", "scalar", Global::NumpyScalar),
    ("numpy.core.multiarray", "scalar", Global::NumpyScalar),
    ("numpy", "dtype", Global::NumpyDtype),
];

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    ALLOWED_GLOBALS.iter().find(|(m, n, _)| *m == module && *n == name).map(|(_, _, global)| *global).ok_or_else(|| {
        format!(
            "the pickle names `{}.{}`, which is not one of the globals nnU-Net checkpoints use: refused, nothing run",
            printable(module),
            printable(name)
        )
    })
}

/// A name from the input, safe to print on one line.
fn printable(text: &str) -> String {
    text.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A numpy scalar type (numpy `dtype('f8')` and its pickled state).
#[derive(Debug, Clone, Copy)]
struct NumpyDtype {
    kind: u8,
    size: usize,
    big_endian: bool,
}

/// A storage read from the archive, little-endian.
pub(crate) struct Storage {
    pub dtype: Dtype,
    pub bytes: Vec<u8>,
}

/// What the unpickler's stack and memo hold: scalars by value, containers as indices into the arena.
#[derive(Debug, Clone)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// An arena index (list, tuple, dict, numpy dtype).
    Node(usize),
    Tensor(Arc<Tensor>),
    Device(Rc<str>),
    Global(Global),
    /// An index into the storages read so far.
    Storage(usize),
}

enum Node {
    List(Vec<Obj>),
    Tuple(Vec<Obj>),
    Dict { ordered: bool, entries: Vec<(Obj, Obj)>, index: HashMap<DictKey, usize> },
    NumpyDtype(NumpyDtype),
}

/// A dict key as Python compares it (`1 == 1.0 == True`), for the keys checkpoints use.
#[derive(Debug, PartialEq, Eq, Hash)]
enum DictKey {
    None,
    Int(i64),
    Float(u64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
}

fn dict_key(key: &Obj) -> Result<DictKey, String> {
    Ok(match key {
        Obj::None => DictKey::None,
        Obj::Bool(b) => DictKey::Int(i64::from(*b)),
        Obj::Int(i) => DictKey::Int(*i),
        Obj::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => DictKey::Int(*f as i64),
        Obj::Float(f) => DictKey::Float(f.to_bits()),
        Obj::Str(s) => DictKey::Str(s.clone()),
        Obj::Bytes(b) => DictKey::Bytes(b.clone()),
        _ => return Err("a dict key that is not a string, number, bytes or None".into()),
    })
}

/// Reads a storage: key in the archive, element type, element count (all from the pickle).
pub(crate) type StorageLoader<'a> = dyn FnMut(&str, Dtype, u64) -> Result<Storage, String> + 'a;

/// A tensor view: storage index, offset, size, stride.
type View = (usize, u64, Vec<u64>, Vec<u64>);

struct Machine<'a> {
    input: &'a [u8],
    at: usize,
    stack: Vec<Obj>,
    marks: Vec<usize>,
    memo: HashMap<u32, Obj>,
    arena: Vec<Node>,
    storages: Vec<Storage>,
    storage_by_key: HashMap<String, usize>,
    /// Each distinct view gathered once: a state_dict's alias keys are views equal to their canonical one.
    views: HashMap<View, Arc<Tensor>>,
    load_storage: &'a mut StorageLoader<'a>,
    /// Bytes of tensor data the views may still gather (views of one storage may overlap).
    tensor_budget: u64,
}

/// Runs `pickle`; tensors' storages come from `load_storage`, and their views together may hold at most
/// `tensor_budget` bytes. The error is the problem alone, for the caller to prefix with the file.
pub(crate) fn unpickle<'a>(
    pickle: &'a [u8],
    load_storage: &'a mut StorageLoader<'a>,
    tensor_budget: u64,
) -> Result<Value, String> {
    let mut machine = Machine {
        input: pickle,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena: Vec::new(),
        storages: Vec::new(),
        storage_by_key: HashMap::new(),
        views: HashMap::new(),
        load_storage,
        tensor_budget,
    };
    let result = machine.run()?;
    // Shared references are copied into the tree: each node costs one, strings and bytes their length;
    // a checkpoint's tree is about as big as its pickle, so a few times that bounds what input can ask.
    let mut budget = pickle.len().saturating_mul(4).saturating_add(1 << 20);
    machine.to_value(&result, 0, &mut budget)
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.input.len()).ok_or("the pickle ends early")?;
        let input: &'a [u8] = self.input;
        self.at = end;
        Ok(&input[end - n..end])
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn length(&mut self, width: usize) -> Result<usize, String> {
        let bytes = self.take(width)?;
        let mut value = [0u8; 8];
        value[..width].copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(value)).map_err(|_| "a length beyond this machine".to_string())
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let input: &'a [u8] = self.input;
        let rest = &input[self.at..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("the pickle ends early")?;
        self.at += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| "a GLOBAL name that is not UTF-8".to_string())
    }

    fn text(&mut self, length: usize) -> Result<Obj, String> {
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes).map_err(|_| "a string that is not UTF-8".to_string())?;
        Ok(Obj::Str(text.into()))
    }

    fn pop(&mut self) -> Result<Obj, String> {
        if self.marks.last().is_some_and(|&mark| mark >= self.stack.len()) {
            return Err("an opcode pops across a MARK".into());
        }
        self.stack.pop().ok_or_else(|| "an opcode pops an empty stack".into())
    }

    fn top(&mut self) -> Result<&Obj, String> {
        if self.marks.last().is_some_and(|&mark| mark >= self.stack.len()) {
            return Err("an opcode reads across a MARK".into());
        }
        self.stack.last().ok_or_else(|| "an opcode reads an empty stack".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Obj>, String> {
        let mark = self.marks.pop().ok_or("an opcode needs a MARK there is none of")?;
        Ok(self.stack.split_off(mark))
    }

    fn push_node(&mut self, node: Node) {
        self.arena.push(node);
        self.stack.push(Obj::Node(self.arena.len() - 1));
    }

    fn new_dict(ordered: bool) -> Node {
        Node::Dict { ordered, entries: Vec::new(), index: HashMap::new() }
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let obj = self.memo.get(&key).cloned().ok_or_else(|| format!("memo entry {key} read before it is written"))?;
        self.stack.push(obj);
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let obj = self.top()?.clone();
        self.memo.insert(key, obj);
        Ok(())
    }

    /// Appends `items` to the list on the stack top (below the MARK, for APPENDS).
    fn append(&mut self, items: Vec<Obj>) -> Result<(), String> {
        let Obj::Node(index) = *self.top()? else { return Err("APPEND to something that is not a list".into()) };
        match &mut self.arena[index] {
            Node::List(list) => list.extend(items),
            _ => return Err("APPEND to something that is not a list".into()),
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Obj>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of items".into());
        }
        let Obj::Node(index) = *self.top()? else { return Err("SETITEM on something that is not a dict".into()) };
        let Node::Dict { entries, index, .. } = &mut self.arena[index] else {
            return Err("SETITEM on something that is not a dict".into());
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            match index.entry(dict_key(&key)?) {
                std::collections::hash_map::Entry::Occupied(at) => entries[*at.get()].1 = value,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(entries.len());
                    entries.push((key, value));
                }
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Obj, String> {
        loop {
            let opcode = self.byte()?;
            match opcode {
                0x80 => {
                    let protocol = self.byte()?;
                    if !(2..=5).contains(&protocol) {
                        return Err(format!("pickle protocol {protocol} (torch.save writes 2)"));
                    }
                }
                // FRAME: a hint of the next frame's length, which the opcodes themselves delimit
                0x95 => {
                    self.take(8)?;
                }
                b'.' => {
                    let result = self.pop()?;
                    return if self.stack.is_empty() && self.marks.is_empty() {
                        Ok(result)
                    } else {
                        Err("STOP with values left on the stack".into())
                    };
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.push_node(Self::new_dict(false)),
                b']' => self.push_node(Node::List(Vec::new())),
                b')' => self.push_node(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let count = usize::from(opcode - 0x84);
                    let mut items = (0..count).map(|_| self.pop()).collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.push_node(Node::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push_node(Self::new_dict(false));
                    self.set_items(items)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'J' => {
                    let value = i32::from_le_bytes(self.array()?);
                    self.stack.push(Obj::Int(value.into()));
                }
                b'K' => {
                    let value = self.byte()?;
                    self.stack.push(Obj::Int(value.into()));
                }
                b'M' => {
                    let value = u16::from_le_bytes(self.array()?);
                    self.stack.push(Obj::Int(value.into()));
                }
                0x8a => {
                    let length = usize::from(self.byte()?);
                    let bytes = self.take(length)?;
                    let value = long_from_le_bytes(bytes)?;
                    self.stack.push(Obj::Int(value));
                }
                b'G' => {
                    let value = f64::from_be_bytes(self.array()?);
                    self.stack.push(Obj::Float(value));
                }
                b'X' | 0x8c | 0x8d => {
                    let width = match opcode {
                        b'X' => 4,
                        0x8c => 1,
                        _ => 8,
                    };
                    let length = self.length(width)?;
                    let text = self.text(length)?;
                    self.stack.push(text);
                }
                b'B' | b'C' | 0x8e => {
                    let width = match opcode {
                        b'B' => 4,
                        b'C' => 1,
                        _ => 8,
                    };
                    let length = self.length(width)?;
                    let bytes = self.take(length)?;
                    self.stack.push(Obj::Bytes(bytes.into()));
                }
                // SHORT_BINSTRING, BINSTRING: Python 2's str, as torch.load decodes it (encoding='utf-8'),
                // or bytes where it is not UTF-8 (numpy 1's scalar data)
                b'U' | b'T' => {
                    let length = if opcode == b'U' {
                        usize::from(self.byte()?)
                    } else {
                        usize::try_from(i32::from_le_bytes(self.array()?))
                            .map_err(|_| "BINSTRING with a negative length".to_string())?
                    };
                    let bytes = self.take(length)?;
                    let obj = match std::str::from_utf8(bytes) {
                        Ok(text) => Obj::Str(text.into()),
                        Err(_) => Obj::Bytes(bytes.into()),
                    };
                    self.stack.push(obj);
                }
                b'N' => self.stack.push(Obj::None),
                0x88 => self.stack.push(Obj::Bool(true)),
                0x89 => self.stack.push(Obj::Bool(false)),
                b'q' => {
                    let key = self.byte()?;
                    self.memo_put(key.into())?;
                }
                b'r' => {
                    let key = u32::from_le_bytes(self.array()?);
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len()).map_err(|_| "too many memo entries".to_string())?;
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.byte()?;
                    self.memo_get(key.into())?;
                }
                b'j' => {
                    let key = u32::from_le_bytes(self.array()?);
                    self.memo_get(key)?;
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?;
                    let global = resolve_global(&module, name)?;
                    self.stack.push(Obj::Global(global));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Obj::Str(module), Obj::Str(name)) = (module, name) else {
                        return Err("STACK_GLOBAL of something that is not two strings".into());
                    };
                    let global = resolve_global(&module, &name)?;
                    self.stack.push(Obj::Global(global));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let Obj::Global(global) = callable else { return Err("REDUCE of something not callable".into()) };
                    let args = self.tuple(&args).ok_or("REDUCE with arguments that are not a tuple")?.to_vec();
                    let result = self.call(global, &args)?;
                    self.stack.push(result);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.build(&target, &state)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_storage(&pid)?;
                    self.stack.push(storage);
                }
                _ => return Err(format!("unsupported pickle opcode 0x{opcode:02x} at byte {}", self.at - 1)),
            }
        }
    }

    fn tuple(&self, obj: &Obj) -> Option<&[Obj]> {
        match obj {
            Obj::Node(index) => match &self.arena[*index] {
                Node::Tuple(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// A tuple or list of non-negative ints (a tensor's size or stride).
    fn dims(&self, obj: &Obj, what: &str) -> Result<Vec<u64>, String> {
        let items = match obj {
            Obj::Node(index) => match &self.arena[*index] {
                Node::Tuple(items) | Node::List(items) => items,
                _ => return Err(format!("a tensor {what} that is not a tuple")),
            },
            _ => return Err(format!("a tensor {what} that is not a tuple")),
        };
        items
            .iter()
            .map(|item| match item {
                Obj::Int(i) => u64::try_from(*i).map_err(|_| format!("a negative tensor {what} ({i})")),
                _ => Err(format!("a tensor {what} that is not integers")),
            })
            .collect()
    }

    /// What calling an allowed global builds (REDUCE).
    fn call(&mut self, global: Global, args: &[Obj]) -> Result<Obj, String> {
        match (global, args) {
            (Global::OrderedDict, []) => {
                self.arena.push(Self::new_dict(true));
                Ok(Obj::Node(self.arena.len() - 1))
            }
            // torch/_utils.py: _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
            // backward_hooks, metadata=None); requires_grad, hooks and metadata do not change the data
            (Global::RebuildTensorV2, [Obj::Storage(storage), Obj::Int(offset), size, stride, _, _, ..])
                if args.len() <= 7 =>
            {
                let offset = u64::try_from(*offset).map_err(|_| format!("a negative storage offset ({offset})"))?;
                let size = self.dims(size, "size")?;
                let stride = self.dims(stride, "stride")?;
                let view = (*storage, offset, size, stride);
                if let Some(tensor) = self.views.get(&view) {
                    return Ok(Obj::Tensor(tensor.clone()));
                }
                let (storage, size, stride) = (&self.storages[view.0], &view.2, &view.3);
                let tensor = Arc::new(gather_view(storage, offset, size, stride, &mut self.tensor_budget)?);
                self.views.insert(view, tensor.clone());
                Ok(Obj::Tensor(tensor))
            }
            // torch/_utils.py: _rebuild_parameter(data, requires_grad, backward_hooks): the data
            (Global::RebuildParameter, [Obj::Tensor(tensor), _, _]) => Ok(Obj::Tensor(tensor.clone())),
            // torch.device('cuda', 0), torch.device('cpu'), torch.device('cuda:0')
            (Global::Device, [Obj::Str(kind)]) => Ok(Obj::Device(kind.clone())),
            (Global::Device, [Obj::Str(kind), Obj::Int(index)]) => Ok(Obj::Device(format!("{kind}:{index}").into())),
            (Global::Device, [Obj::Str(kind), Obj::None]) => Ok(Obj::Device(kind.clone())),
            // how pickle protocol 2 writes bytes: _codecs.encode(text, 'latin1'), one char per byte
            (Global::CodecsEncode, [Obj::Str(text), Obj::Str(encoding)])
                if matches!(&**encoding, "latin1" | "latin-1" | "iso-8859-1") =>
            {
                Ok(Obj::Bytes(latin1_bytes(text)?.into()))
            }
            // numpy/_core/multiarray: scalar(dtype, data) is the number data holds
            (Global::NumpyScalar, [Obj::Node(dtype), data]) => {
                let Node::NumpyDtype(dtype) = self.arena[*dtype] else {
                    return Err("numpy scalar of something that is not a numpy dtype".into());
                };
                let bytes = match data {
                    Obj::Bytes(bytes) => bytes.to_vec(),
                    Obj::Str(text) => latin1_bytes(text)?,
                    _ => return Err("numpy scalar whose data is not bytes".into()),
                };
                numpy_scalar(dtype, &bytes)
            }
            // numpy.dtype(name, align, copy)
            (Global::NumpyDtype, [Obj::Str(name), ..]) if args.len() <= 3 => {
                let dtype = numpy_dtype(name)?;
                self.arena.push(Node::NumpyDtype(dtype));
                Ok(Obj::Node(self.arena.len() - 1))
            }
            _ => Err(format!("{} called with arguments it does not take", global_name(global))),
        }
    }

    /// BUILD: the state a numpy dtype pickles (its byte order), and the attributes torch gives a
    /// state_dict's OrderedDict (`_metadata`), which nn-tools does not need.
    fn build(&mut self, target: &Obj, state: &Obj) -> Result<(), String> {
        let Obj::Node(target) = *target else { return Err("BUILD of something that takes no state".into()) };
        let byte_order = match self.tuple(state) {
            // numpy/_core/_internal.py, dtype.__setstate__: (version, byteorder, subarray, names, ...)
            Some([Obj::Int(_), Obj::Str(order), ..]) => Some(order.clone()),
            _ => None,
        };
        let state_is_dict = matches!(state, Obj::Node(i) if matches!(self.arena[*i], Node::Dict { .. }));
        match (&mut self.arena[target], byte_order) {
            (Node::NumpyDtype(dtype), Some(order)) => {
                dtype.big_endian = match &*order {
                    ">" => true,
                    "<" | "=" | "|" => false,
                    _ => return Err(format!("numpy byte order `{}`", printable(&order))),
                };
                Ok(())
            }
            (Node::Dict { ordered: true, .. }, _) if state_is_dict => Ok(()),
            _ => Err("BUILD of something that takes no state".into()),
        }
    }

    /// BINPERSID: torch/serialization.py `_load.persistent_load`'s
    /// `('storage', StorageType, key, location, numel)`.
    fn persistent_storage(&mut self, pid: &Obj) -> Result<Obj, String> {
        let Some([Obj::Str(kind), Obj::Global(Global::Storage(dtype)), Obj::Str(key), Obj::Str(_), Obj::Int(numel)]) =
            self.tuple(pid)
        else {
            return Err("a persistent id that is not ('storage', torch.*Storage, key, location, numel)".into());
        };
        if &**kind != "storage" {
            return Err(format!("a persistent id of kind `{}`", printable(kind)));
        }
        if let Some(&index) = self.storage_by_key.get(&**key) {
            if self.storages[index].dtype != *dtype {
                return Err(format!("storage {} read as two element types", printable(key)));
            }
            return Ok(Obj::Storage(index));
        }
        let numel = u64::try_from(*numel).map_err(|_| format!("storage {} of {numel} elements", printable(key)))?;
        let (key, dtype) = (key.to_string(), *dtype);
        let storage = (self.load_storage)(&key, dtype, numel)?;
        self.storages.push(storage);
        self.storage_by_key.insert(key, self.storages.len() - 1);
        Ok(Obj::Storage(self.storages.len() - 1))
    }

    /// The Value `obj` stands for; `budget` bounds the copies shared references make.
    fn to_value(&self, obj: &Obj, depth: usize, budget: &mut usize) -> Result<Value, String> {
        let cost = match obj {
            Obj::Str(text) => text.len(),
            Obj::Bytes(bytes) => bytes.len(),
            _ => 0,
        };
        *budget = budget.checked_sub(cost + 1).ok_or("the pickle refers to its objects more than a checkpoint does")?;
        if depth > MAX_DEPTH {
            return Err(format!("containers nested deeper than {MAX_DEPTH}"));
        }
        let items = |items: &[Obj], budget: &mut usize| {
            items.iter().map(|item| self.to_value(item, depth + 1, budget)).collect::<Result<Vec<_>, _>>()
        };
        Ok(match obj {
            Obj::None => Value::None,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(i) => Value::Int(*i),
            Obj::Float(f) => Value::Float(*f),
            Obj::Str(text) => Value::Str(text.to_string()),
            Obj::Bytes(bytes) => Value::Bytes(bytes.to_vec()),
            Obj::Tensor(tensor) => Value::Tensor(tensor.clone()),
            Obj::Device(device) => Value::Device(device.to_string()),
            Obj::Node(index) => match &self.arena[*index] {
                Node::List(list) => Value::List(items(list, budget)?),
                Node::Tuple(tuple) => Value::Tuple(items(tuple, budget)?),
                Node::Dict { ordered, entries, .. } => {
                    let mut pairs = Vec::new();
                    for (key, value) in entries {
                        pairs.push((self.to_value(key, depth + 1, budget)?, self.to_value(value, depth + 1, budget)?));
                    }
                    if *ordered { Value::OrderedDict(pairs) } else { Value::Dict(pairs) }
                }
                Node::NumpyDtype(_) => return Err("a bare numpy dtype in the checkpoint".into()),
            },
            Obj::Global(global) => return Err(format!("a bare {} in the checkpoint", global_name(*global))),
            Obj::Storage(_) => return Err("a bare storage in the checkpoint".into()),
        })
    }
}

fn global_name(global: Global) -> String {
    let (module, name, _) = ALLOWED_GLOBALS.iter().find(|(_, _, g)| *g == global).expect("every Global is allowed");
    format!("{module}.{name}")
}

/// LONG1's little-endian two's complement integer.
fn long_from_le_bytes(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() > 8 {
        return Err(format!("an integer of {} bytes (at most 8 are read)", bytes.len()));
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut value = [if negative { 0xff } else { 0 }; 8];
    value[..bytes.len()].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(value))
}

fn latin1_bytes(text: &str) -> Result<Vec<u8>, String> {
    text.chars().map(|c| u8::try_from(c).map_err(|_| "latin-1 text with a character above U+00FF".into())).collect()
}

/// `numpy.dtype(name)` for the scalar types a checkpoint holds: f4, f8, i1-i8, u1-u8, b1 (with an
/// optional byte order; numpy's pickled state sets it again).
fn numpy_dtype(name: &str) -> Result<NumpyDtype, String> {
    let unsupported = || format!("numpy dtype `{}`", printable(name));
    let (big_endian, code) = match name.as_bytes() {
        [b'>', rest @ ..] => (true, rest),
        [b'<' | b'=' | b'|', rest @ ..] => (false, rest),
        rest => (false, rest),
    };
    let [kind, size] = code else { return Err(unsupported()) };
    let size = usize::from(size.wrapping_sub(b'0'));
    let supported = match kind {
        b'f' => matches!(size, 4 | 8),
        b'i' | b'u' => matches!(size, 1 | 2 | 4 | 8),
        b'b' => size == 1,
        _ => false,
    };
    if !supported {
        return Err(unsupported());
    }
    Ok(NumpyDtype { kind: *kind, size, big_endian })
}

fn numpy_scalar(dtype: NumpyDtype, bytes: &[u8]) -> Result<Obj, String> {
    if bytes.len() != dtype.size {
        return Err(format!("numpy scalar of {} bytes for a {}-byte dtype", bytes.len(), dtype.size));
    }
    let mut little = [0u8; 8];
    little[..dtype.size].copy_from_slice(bytes);
    if dtype.big_endian {
        little[..dtype.size].reverse();
    }
    let unsigned = u64::from_le_bytes(little);
    Ok(match (dtype.kind, dtype.size) {
        (b'f', 8) => Obj::Float(f64::from_bits(unsigned)),
        (b'f', _) => Obj::Float(f32::from_bits(unsigned as u32).into()),
        (b'b', _) => Obj::Bool(unsigned != 0),
        (b'u', _) => Obj::Int(i64::try_from(unsigned).map_err(|_| format!("numpy uint64 {unsigned} beyond int64"))?),
        // sign-extend from the dtype's width
        _ => {
            let shift = 64 - 8 * dtype.size as u32;
            Obj::Int(((unsigned << shift) as i64) >> shift)
        }
    })
}

/// The elements of the view (`offset`, `size`, `stride`, in elements) of `storage`, contiguous.
fn gather_view(
    storage: &Storage,
    offset: u64,
    size: &[u64],
    stride: &[u64],
    budget: &mut u64,
) -> Result<Tensor, String> {
    if size.len() != stride.len() {
        return Err(format!("a tensor of {} sizes and {} strides", size.len(), stride.len()));
    }
    let element = storage.dtype.size();
    let storage_numel = (storage.bytes.len() / element) as u64;
    let numel = size.iter().try_fold(1u64, |n, &s| n.checked_mul(s)).ok_or("a tensor size that overflows")?;
    let shape = size.iter().map(|&s| usize::try_from(s)).collect::<Result<Vec<_>, _>>().map_err(|_| "tensor size")?;
    if numel == 0 {
        return Ok(Tensor { dtype: storage.dtype, shape, data: Vec::new() });
    }
    // the last element the view reaches: offset + sum((size - 1) * stride)
    let last = size
        .iter()
        .zip(stride)
        .try_fold(offset, |end, (&s, &t)| (s - 1).checked_mul(t).and_then(|reach| end.checked_add(reach)))
        .ok_or("a tensor view that overflows")?;
    if last >= storage_numel {
        return Err(format!(
            "a tensor of shape {size:?} (stride {stride:?}, offset {offset}) reaches element {last} of a storage of {storage_numel}"
        ));
    }
    let bytes = numel.checked_mul(element as u64).ok_or("a tensor size that overflows")?;
    *budget = budget.checked_sub(bytes).ok_or("the tensors' views hold more data than the file could")?;
    // the view is within the storage, hence within memory
    let (numel, offset) = (numel as usize, offset as usize);
    // a dimension of size 1 never steps, whatever its stride says
    let stride: Vec<usize> = stride.iter().zip(&shape).map(|(&t, &s)| if s == 1 { 0 } else { t as usize }).collect();
    let mut data = Vec::with_capacity(numel * element);
    let contiguous = (0..shape.len()).all(|d| shape[d] == 1 || stride[d] == shape[d + 1..].iter().product::<usize>());
    if contiguous {
        data.extend_from_slice(&storage.bytes[offset * element..(offset + numel) * element]);
    } else {
        // odometer over the view's index, innermost dimension fastest
        let mut index = vec![0usize; shape.len()];
        let mut position = offset;
        for _ in 0..numel {
            data.extend_from_slice(&storage.bytes[position * element..(position + 1) * element]);
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                position += stride[d];
                if index[d] < shape[d] {
                    break;
                }
                position -= stride[d] * shape[d];
                index[d] = 0;
            }
        }
    }
    Ok(Tensor { dtype: storage.dtype, shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(values: &[f32]) -> Storage {
        Storage { dtype: Dtype::F32, bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }

    #[test]
    fn views_gather_transposed_and_offset_elements() {
        let storage = storage(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut budget = 1 << 20;
        // a 2x3 matrix at offset 1, transposed: shape (3, 2), stride (1, 3)
        let transposed = gather_view(&storage, 1, &[3, 2], &[1, 3], &mut budget).unwrap();
        assert_eq!(transposed.to_f32(), Some(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        assert_eq!(transposed.shape, vec![3, 2]);
        let error = gather_view(&storage, 2, &[3, 2], &[1, 3], &mut budget).unwrap_err();
        assert!(error.contains("reaches element 7 of a storage of 7"), "{error}");
        let error = gather_view(&storage, 0, &[u64::MAX, 2], &[u64::MAX, 1], &mut budget).unwrap_err();
        assert!(error.contains("overflows"), "{error}");
        let mut small_budget = 8;
        assert!(gather_view(&storage, 0, &[3], &[1], &mut small_budget).is_err(), "12 bytes over a budget of 8");
    }

    #[test]
    fn numpy_scalars_follow_their_byte_order_and_width() {
        let big = NumpyDtype { big_endian: true, ..numpy_dtype("f8").unwrap() };
        assert!(matches!(numpy_scalar(big, &1.5f64.to_be_bytes()), Ok(Obj::Float(f)) if f == 1.5));
        assert!(matches!(numpy_scalar(numpy_dtype("<i4").unwrap(), &(-7i32).to_le_bytes()), Ok(Obj::Int(-7))));
        assert!(matches!(numpy_scalar(numpy_dtype("u1").unwrap(), &[200]), Ok(Obj::Int(200))));
        assert!(matches!(numpy_scalar(numpy_dtype("|b1").unwrap(), &[1]), Ok(Obj::Bool(true))));
        assert!(numpy_dtype("c16").is_err() && numpy_dtype("f9").is_err());
        assert_eq!(long_from_le_bytes(&[0xff, 0x7f]), Ok(0x7fff));
        // scalar(dtype('f8') with the pickled state of a big-endian dtype, 8 bytes), as pickle writes it
        let mut pickle =
            b"\x80\x02cnumpy._core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R".to_vec();
        pickle.extend(b"(K\x03X\x01\x00\x00\x00>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x08");
        pickle.extend(1.5f64.to_be_bytes());
        pickle.extend(b"\x86R.");
        let mut no_storages = |_: &str, _: Dtype, _: u64| -> Result<Storage, String> { unreachable!() };
        assert_eq!(unpickle(&pickle, &mut no_storages, 0), Ok(Value::Float(1.5)));
        assert_eq!(long_from_le_bytes(&[0x00, 0x80]), Ok(-0x8000));
    }
}
