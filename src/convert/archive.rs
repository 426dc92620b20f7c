//! The `torch.save` zip archive: its pickle (parsed under the bounds a hostile file needs)
//! and the tensor data it points to, every size checked before anything is allocated.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use candle_core::pickle::{Object, Stack};

use crate::error::{Error, ModelProblem, Result};
use crate::model::MAX_MODEL_FILE_BYTES;

/// A checkpoint that cannot be converted.
pub(super) fn bad(detail: impl Into<String>) -> Error {
    Error::model(ModelProblem::BadCheckpoint, detail)
}

/// The pickle of a state dict is small (a few hundred bytes per tensor); this bounds what a
/// hostile `data.pkl` can make the parser hold.
const MAX_PICKLE_BYTES: u64 = 4 << 20;
/// Nesting of pickled objects; a state dict is about 6 deep.
const MAX_DEPTH: u32 = 64;
/// Objects copied by the pickle memo (BINGET/BINPUT clone in candle's reader): bounds the
/// "billion laughs" of a pickle that fetches a memoised object many times.
const MAX_CLONED_OBJECTS: u64 = 1 << 20;
/// The `torch.save` zip archive: `NAME/data.pkl` plus one `NAME/data/KEY` entry per storage.
pub(super) struct Archive<'a> {
    zip: std::cell::RefCell<zip::ZipArchive<Cursor<&'a [u8]>>>,
    pickle_name: String,
    root: String,
}

/// The first bytes of PyTorch's legacy (pre-1.6) format: a protocol-2 pickle of its magic
/// number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

impl<'a> Archive<'a> {
    pub(super) fn open(bytes: &'a [u8]) -> Result<Self> {
        if bytes.starts_with(&LEGACY_MAGIC) {
            return Err(bad(
                "this is PyTorch's legacy (pre-1.6) checkpoint format, which mgecl does not \
                 read; re-save it in the zip format with PyTorch >= 1.6: \
                 torch.save(torch.load('IN.pth', map_location='cpu', weights_only=False), 'OUT.pth')",
            ));
        }
        if !bytes.starts_with(b"PK\x03\x04") {
            let detail = if bytes.len() > 8 && bytes[8] == b'{' {
                "this looks like a safetensors file: load it as a model, no conversion needed"
            } else {
                "not a PyTorch checkpoint (neither a torch.save zip archive nor the legacy format)"
            };
            return Err(bad(detail));
        }
        // torch.save writes nothing before the archive. Said so, because zip 9.8's detection of
        // a prepended offset rejects some valid torch.save archives ("Invalid Central
        // Directory header", tests/data/convert/resnet12_dataparallel.pth).
        let config = zip::read::Config {
            archive_offset: zip::read::ArchiveOffset::Known(0),
        };
        let zip = zip::ZipArchive::with_config(config, Cursor::new(bytes))
            .map_err(|e| bad(format!("the checkpoint's zip archive is unreadable: {e}")))?;
        let pickles: Vec<String> = zip
            .file_names()
            .filter_map(|name| name.ok().map(|n| n.into_owned()))
            .filter(|name| {
                name.strip_suffix("/data.pkl")
                    .is_some_and(|root| !root.is_empty() && !root.contains('/'))
            })
            .collect();
        let pickle_name = match pickles.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(bad(
                    "the zip archive has no data.pkl: not a torch.save checkpoint",
                ))
            }
            _ => return Err(bad("the zip archive holds several data.pkl files")),
        };
        let root = pickle_name.trim_end_matches("/data.pkl").to_string();
        Ok(Archive {
            zip: std::cell::RefCell::new(zip),
            pickle_name,
            root,
        })
    }

    /// An entry's bytes, refused beyond `limit` before reading it.
    fn read_entry(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let mut zip = self.zip.borrow_mut();
        let entry = zip
            .by_name(name)
            .map_err(|e| bad(format!("archive entry {name:?}: {e}")))?;
        if entry.size() > limit {
            return Err(Error::LimitExceeded(format!(
                "archive entry {name:?} is {} bytes, more than {limit}",
                entry.size()
            )));
        }
        let mut data = Vec::new();
        entry
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("archive entry {name:?}: {e}")))?;
        if data.len() as u64 > limit {
            return Err(Error::LimitExceeded(format!(
                "archive entry {name:?} is larger than {limit} bytes"
            )));
        }
        Ok(data)
    }

    /// Tensor `key` as float32, its elements gathered through its strides; `budget` bounds
    /// the bytes read over the whole conversion.
    /// The archive's pickle, parsed.
    pub(super) fn pickle(&self) -> Result<Object> {
        parse_pickle(&self.read_entry(&self.pickle_name, MAX_PICKLE_BYTES)?)
    }

    pub(super) fn read_tensor(
        &self,
        key: &str,
        tensor: &TensorRef,
        budget: &mut u64,
    ) -> Result<Vec<f32>> {
        let dtype = tensor.dtype.ok_or_else(|| {
            bad(format!(
                "tensor {key:?} is stored as {}, expected a floating-point type",
                tensor.storage_type
            ))
        })?;
        let numel = tensor
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                bad(format!(
                    "tensor {key:?}: shape {:?} overflows",
                    tensor.shape
                ))
            })?;
        // Last element reached: offset + sum (size - 1) * stride.
        let mut last = tensor.offset;
        for (&size, &stride) in tensor.shape.iter().zip(&tensor.strides) {
            if size > 0 {
                last = (size - 1)
                    .checked_mul(stride)
                    .and_then(|s| last.checked_add(s))
                    .ok_or_else(|| bad(format!("tensor {key:?}: strides overflow")))?;
            }
        }
        let width = dtype.width();
        let needed = if numel == 0 {
            0
        } else {
            (last as u64 + 1).saturating_mul(width as u64)
        };
        let name = format!("{}/data/{}", self.root, tensor.storage_key);
        let available = {
            let mut zip = self.zip.borrow_mut();
            let entry = zip
                .by_name(&name)
                .map_err(|e| bad(format!("tensor {key:?}: storage entry {name:?} ({e})")))?;
            entry.size()
        };
        if needed > available {
            return Err(bad(format!(
                "tensor {key:?} (shape {:?}) needs {needed} bytes of storage {name:?}, which holds {available}",
                tensor.shape
            )));
        }
        if needed > *budget {
            return Err(Error::LimitExceeded(format!(
                "the checkpoint's tensors exceed {MAX_MODEL_FILE_BYTES} bytes"
            )));
        }
        *budget -= needed;
        let data = self.read_entry(&name, needed)?;
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0usize; tensor.shape.len()];
        for _ in 0..numel {
            let element = tensor.offset
                + index
                    .iter()
                    .zip(&tensor.strides)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            let at = element * width;
            let value = dtype.decode(&data[at..at + width]);
            if !value.is_finite() {
                return Err(Error::model(
                    ModelProblem::NonFiniteWeight,
                    format!("tensor {key:?} holds a non-finite value ({value})"),
                ));
            }
            values.push(value);
            // Advance the row-major multi-index.
            for axis in (0..index.len()).rev() {
                index[axis] += 1;
                if index[axis] < tensor.shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Ok(values)
    }
}

#[derive(Debug, Clone, Copy)]
enum FloatType {
    F32,
    F64,
    F16,
    BF16,
}

impl FloatType {
    fn of_storage(class_name: &str) -> Option<Self> {
        match class_name {
            "FloatStorage" => Some(FloatType::F32),
            "DoubleStorage" => Some(FloatType::F64),
            "HalfStorage" => Some(FloatType::F16),
            "BFloat16Storage" => Some(FloatType::BF16),
            _ => None,
        }
    }

    fn width(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F64 => 8,
            FloatType::F16 | FloatType::BF16 => 2,
        }
    }

    /// One little-endian element (`bytes.len() == self.width()`).
    fn decode(self, bytes: &[u8]) -> f32 {
        match self {
            FloatType::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            FloatType::F64 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                f64::from_le_bytes(b) as f32
            }
            FloatType::F16 => half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
            FloatType::BF16 => half::bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
        }
    }
}

/// A tensor as the pickle describes it (`torch._utils._rebuild_tensor_v2`).
#[derive(Debug, Clone)]
pub(super) struct TensorRef {
    storage_key: String,
    storage_type: String,
    dtype: Option<FloatType>,
    offset: usize,
    pub(super) shape: Vec<usize>,
    strides: Vec<usize>,
}

fn class_is(obj: &Object, module: &str, class: &str) -> bool {
    matches!(obj, Object::Class { module_name, class_name } if module_name == module && class_name == class)
}

fn usize_of(obj: &Object) -> Option<usize> {
    match obj {
        Object::Int(v) => usize::try_from(*v).ok(),
        Object::Long(v) => usize::try_from(*v).ok(),
        _ => None,
    }
}

fn usizes_of(obj: &Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(items) | Object::List(items) => items.iter().map(usize_of).collect(),
        _ => None,
    }
}

/// The tensor an object rebuilds, if it is one: `None` for anything else, `Some(Err)` for a
/// tensor whose arguments make no sense.
pub(super) fn tensor_ref(obj: &Object) -> Option<Result<TensorRef>> {
    let Object::Reduce { callable, args } = obj else {
        return None;
    };
    if class_is(callable, "torch._utils", "_rebuild_parameter") {
        // (tensor, requires_grad, backward_hooks)
        return match args.as_ref() {
            Object::Tuple(items) => items.first().and_then(tensor_ref),
            _ => None,
        };
    }
    if class_is(callable, "torch._tensor", "_rebuild_from_type_v2") {
        // (func, type, args, state): the tensor is func(*args).
        let Object::Tuple(items) = args.as_ref() else {
            return None;
        };
        let (Some(func), Some(inner)) = (items.first(), items.get(2)) else {
            return None;
        };
        return tensor_ref(&Object::Reduce {
            callable: Box::new(func.clone()),
            args: Box::new(inner.clone()),
        });
    }
    if !class_is(callable, "torch._utils", "_rebuild_tensor_v2") {
        return None;
    }
    Some(rebuild_tensor_args(args))
}

/// `(storage, storage_offset, size, stride, ...)` with storage the persistent id
/// `('storage', StorageType, key, location, numel)`.
fn rebuild_tensor_args(args: &Object) -> Result<TensorRef> {
    let malformed = || bad("a tensor's rebuild arguments in the pickle are malformed");
    let Object::Tuple(items) = args else {
        return Err(malformed());
    };
    let (Some(Object::PersistentLoad(storage)), Some(offset), Some(size), Some(stride)) =
        (items.first(), items.get(1), items.get(2), items.get(3))
    else {
        return Err(malformed());
    };
    let Object::Tuple(storage) = storage.as_ref() else {
        return Err(malformed());
    };
    let (Some(Object::Class { class_name, .. }), Some(Object::Unicode(key))) =
        (storage.get(1), storage.get(2))
    else {
        return Err(malformed());
    };
    let shape = usizes_of(size).ok_or_else(malformed)?;
    let strides = usizes_of(stride).ok_or_else(malformed)?;
    if shape.len() != strides.len() || shape.len() > 8 {
        return Err(malformed());
    }
    // A storage key names an archive entry: keep it to a plain file name.
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(bad(format!("a tensor names the storage {key:?}")));
    }
    Ok(TensorRef {
        storage_key: key.clone(),
        storage_type: class_name.clone(),
        dtype: FloatType::of_storage(class_name),
        offset: usize_of(offset).ok_or_else(malformed)?,
        shape,
        strides,
    })
}

/// Depth and object count of a value on candle's pickle stack, tracked beside it.
#[derive(Debug, Clone, Copy)]
struct Extent {
    depth: u32,
    objects: u64,
}

const LEAF: Extent = Extent {
    depth: 1,
    objects: 1,
};

fn enclosing(children: &[Extent]) -> Extent {
    Extent {
        depth: 1 + children.iter().map(|c| c.depth).max().unwrap_or(0),
        objects: 1 + children.iter().map(|c| c.objects).sum::<u64>(),
    }
}

/// Parses a pickle with candle's reader, one opcode at a time, keeping beside its stack the
/// depth and size of each value so that a hostile pickle is refused before it can exhaust the
/// stack (deeply nested objects are dropped recursively) or memory (memo copies). Also refuses,
/// before candle reads them, the arguments its reader would trust: string lengths beyond the
/// data, integers wider than 64 bits.
fn parse_pickle(data: &[u8]) -> Result<Object> {
    let mut stack = Stack::empty();
    let mut extents: Vec<Extent> = Vec::new();
    let mut memo: HashMap<u32, Extent> = HashMap::new();
    let mut cloned = 0u64;
    let mut cursor = Cursor::new(data);
    loop {
        let at = cursor.position() as usize;
        let Some(&op) = data.get(at) else {
            return Err(bad("the pickle ends before its STOP opcode"));
        };
        let arg = &data[at + 1..];
        match op {
            b'X' if arg.len() >= 4 => {
                let len = u32::from_le_bytes([arg[0], arg[1], arg[2], arg[3]]) as usize;
                if len > arg.len() - 4 {
                    return Err(bad(format!("pickle byte {at}: a string runs past the end")));
                }
            }
            0x8a if arg.first().is_some_and(|&n| n > 8) => {
                return Err(bad(format!(
                    "pickle byte {at}: an integer wider than 64 bits"
                )));
            }
            _ => {}
        }
        // Where POP_MARK-style opcodes cut the stack (found before candle pops it).
        let mark = if matches!(op, b't' | b'e' | b'u') {
            stack
                .stack()
                .iter()
                .rposition(|o| matches!(o, Object::Mark))
        } else {
            None
        };
        let step =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stack.read(&mut cursor)))
                .map_err(|_| bad(format!("pickle byte {at}: the pickle reader failed")))?;
        let stop = step.map_err(|e| {
            // candle's messages can quote a whole object: keep the first 200 characters.
            let message: String = e.to_string().chars().take(200).collect();
            bad(format!("pickle byte {at}: {message}"))
        })?;
        if stop {
            break;
        }
        let pop = |extents: &mut Vec<Extent>, n: usize| -> Result<Vec<Extent>> {
            let from = extents
                .len()
                .checked_sub(n)
                .ok_or_else(|| bad(format!("pickle byte {at}: stack underflow")))?;
            Ok(extents.split_off(from))
        };
        let to_mark = |extents: &mut Vec<Extent>| -> Result<Vec<Extent>> {
            let mark = mark.ok_or_else(|| bad(format!("pickle byte {at}: no mark")))?;
            let items = extents.split_off((mark + 1).min(extents.len()));
            extents.pop();
            Ok(items)
        };
        match op {
            b'Q' => {
                let items = pop(&mut extents, 1)?;
                extents.push(enclosing(&items));
            }
            b'R' | b'b' | 0x81 => {
                let items = pop(&mut extents, 2)?;
                extents.push(enclosing(&items));
            }
            0x85..=0x87 => {
                let items = pop(&mut extents, usize::from(op - 0x84))?;
                extents.push(enclosing(&items));
            }
            b't' => {
                let items = to_mark(&mut extents)?;
                extents.push(enclosing(&items));
            }
            b'a' | b's' | b'e' | b'u' => {
                let items = match op {
                    b'a' => pop(&mut extents, 1)?,
                    b's' => pop(&mut extents, 2)?,
                    _ => to_mark(&mut extents)?,
                };
                let container = extents
                    .last_mut()
                    .ok_or_else(|| bad(format!("pickle byte {at}: stack underflow")))?;
                let grown = enclosing(&items);
                container.depth = container.depth.max(grown.depth);
                container.objects += grown.objects - 1;
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    u32::from(arg[0])
                } else {
                    u32::from_le_bytes([arg[0], arg[1], arg[2], arg[3]])
                };
                let extent = *memo
                    .get(&id)
                    .ok_or_else(|| bad(format!("pickle byte {at}: unknown memo entry")))?;
                cloned += extent.objects;
                extents.push(extent);
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    u32::from(arg[0])
                } else {
                    u32::from_le_bytes([arg[0], arg[1], arg[2], arg[3]])
                };
                let extent = *extents
                    .last()
                    .ok_or_else(|| bad(format!("pickle byte {at}: stack underflow")))?;
                cloned += extent.objects;
                memo.insert(id, extent);
            }
            0x80 => {}
            _ => extents.push(LEAF),
        }
        if extents.len() != stack.stack().len() {
            return Err(bad(format!(
                "pickle byte {at}: opcode 0x{op:02x} is not supported"
            )));
        }
        if extents.last().is_some_and(|e| e.depth > MAX_DEPTH) {
            return Err(Error::LimitExceeded(format!(
                "the checkpoint's pickle nests objects more than {MAX_DEPTH} deep"
            )));
        }
        if cloned > MAX_CLONED_OBJECTS {
            return Err(Error::LimitExceeded(format!(
                "the checkpoint's pickle copies more than {MAX_CLONED_OBJECTS} objects"
            )));
        }
    }
    stack
        .finalize()
        .map_err(|e| bad(format!("the pickle holds no object: {e}")))
}
