//! How a Rust parameter or return type maps to a protobuf field type.
//!
//! Recognition is syntactic (a proc macro sees no types): a type is known by the last segment
//! of its path (`f64`, `String`, `Vec<T>`, `Option<T>`, `HashMap<K, V>`, `BTreeMap<K, V>`,
//! `Bytes`); any other path without generic arguments is taken to be a prost message, or a prost
//! enum when the parameter carries `#[runar(enumeration)]`.

use proc_macro2::TokenStream;
use prost_types::field_descriptor_proto::Type as ProtoType;
use quote::{ToTokens, quote};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type, TypePath};

/// A protobuf scalar type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    /// `bytes` held as `Vec<u8>`.
    BytesVec,
    /// `bytes` held as `bytes::Bytes`.
    BytesBuf,
}

impl Scalar {
    /// The name prost-derive knows the type by (`double`, `sint32`, `bytes`, ...).
    pub(crate) fn prost_name(self) -> &'static str {
        match self {
            Scalar::Double => "double",
            Scalar::Float => "float",
            Scalar::Int32 => "int32",
            Scalar::Int64 => "int64",
            Scalar::Uint32 => "uint32",
            Scalar::Uint64 => "uint64",
            Scalar::Sint32 => "sint32",
            Scalar::Sint64 => "sint64",
            Scalar::Fixed32 => "fixed32",
            Scalar::Fixed64 => "fixed64",
            Scalar::Sfixed32 => "sfixed32",
            Scalar::Sfixed64 => "sfixed64",
            Scalar::Bool => "bool",
            Scalar::String => "string",
            Scalar::BytesVec | Scalar::BytesBuf => "bytes",
        }
    }

    /// The tokens inside `#[prost(...)]` naming the type.
    pub(crate) fn prost_attr(self) -> TokenStream {
        match self {
            Scalar::BytesVec => quote!(bytes = "vec"),
            Scalar::BytesBuf => quote!(bytes = "bytes"),
            other => {
                let name = syn::Ident::new(other.prost_name(), proc_macro2::Span::call_site());
                quote!(#name)
            }
        }
    }

    pub(crate) fn proto_type(self) -> ProtoType {
        match self {
            Scalar::Double => ProtoType::Double,
            Scalar::Float => ProtoType::Float,
            Scalar::Int32 => ProtoType::Int32,
            Scalar::Int64 => ProtoType::Int64,
            Scalar::Uint32 => ProtoType::Uint32,
            Scalar::Uint64 => ProtoType::Uint64,
            Scalar::Sint32 => ProtoType::Sint32,
            Scalar::Sint64 => ProtoType::Sint64,
            Scalar::Fixed32 => ProtoType::Fixed32,
            Scalar::Fixed64 => ProtoType::Fixed64,
            Scalar::Sfixed32 => ProtoType::Sfixed32,
            Scalar::Sfixed64 => ProtoType::Sfixed64,
            Scalar::Bool => ProtoType::Bool,
            Scalar::String => ProtoType::String,
            Scalar::BytesVec | Scalar::BytesBuf => ProtoType::Bytes,
        }
    }

    /// The `google.protobuf` wrapper message whose encoding prost gives this Rust type's own
    /// `Message` impl (`f64` is a `DoubleValue`), for the types that have one.
    pub(crate) fn wrapper(self) -> Option<&'static str> {
        Some(match self {
            Scalar::Double => ".google.protobuf.DoubleValue",
            Scalar::Float => ".google.protobuf.FloatValue",
            Scalar::Int32 => ".google.protobuf.Int32Value",
            Scalar::Int64 => ".google.protobuf.Int64Value",
            Scalar::Uint32 => ".google.protobuf.UInt32Value",
            Scalar::Uint64 => ".google.protobuf.UInt64Value",
            Scalar::Bool => ".google.protobuf.BoolValue",
            Scalar::String => ".google.protobuf.StringValue",
            Scalar::BytesVec | Scalar::BytesBuf => ".google.protobuf.BytesValue",
            _ => return None,
        })
    }

    fn is_map_key(self) -> bool {
        !matches!(
            self,
            Scalar::Double | Scalar::Float | Scalar::BytesVec | Scalar::BytesBuf
        )
    }
}

/// The protobuf name of `google.protobuf.Empty`, which `()` is.
pub(crate) const EMPTY: &str = ".google.protobuf.Empty";

/// The element type of a field.
#[derive(Clone)]
pub(crate) enum Elem {
    Scalar(Scalar),
    /// A prost message; `proto` is its protobuf type name (`.google.protobuf.Empty` for `()`,
    /// else the last segment of the Rust path).
    Message {
        proto: String,
    },
    /// A prost enum (carried as `i32`); `ty` is its Rust type.
    Enum {
        ty: Box<Type>,
        proto: String,
    },
}

/// How many values a field holds.
#[derive(Clone)]
pub(crate) enum Shape {
    Single,
    /// `Option<T>`: proto3 `optional`.
    Optional,
    /// `Vec<T>`: `repeated`.
    Repeated,
    /// `HashMap<K, V>` or `BTreeMap<K, V>`: `map<K, V>`.
    Map {
        btree: bool,
        key: Scalar,
        key_ty: Box<Type>,
    },
}

/// The protobuf type of one parameter.
#[derive(Clone)]
pub(crate) struct FieldType {
    pub(crate) shape: Shape,
    pub(crate) elem: Elem,
}

impl FieldType {
    /// True when the Rust type itself is a prost `Message` with this field's encoding at field 1
    /// (a single scalar with a wrapper, a message, `()`): then a one-parameter method sends the
    /// value itself.
    pub(crate) fn is_direct_payload(&self) -> bool {
        match (&self.shape, &self.elem) {
            (Shape::Single, Elem::Scalar(s)) => s.wrapper().is_some(),
            (Shape::Single, Elem::Message { .. }) => true,
            _ => false,
        }
    }

    pub(crate) fn has_enum(&self) -> bool {
        matches!(self.elem, Elem::Enum { .. })
    }
}

/// Per-parameter options from `#[runar(...)]`.
#[derive(Default)]
pub(crate) struct ParamOptions {
    /// `#[runar(enumeration)]`: the type is a prost enum.
    pub(crate) enumeration: Option<proc_macro2::Span>,
    /// `#[runar(sint32)]` and friends: another encoding of the same Rust integer type.
    pub(crate) scalar: Option<(Scalar, proc_macro2::Span)>,
}

const SUPPORTED: &str = "supported: f64, f32, i32, i64, u32, u64, bool, String, Vec<u8>, \
    Bytes, (), a prost message or enum, and Option<T>, Vec<T>, HashMap<K, V> or BTreeMap<K, V> of those";

/// A type as the user wrote it, for messages: `Vec<f64>`, not `Vec < f64 >`.
pub(crate) fn display(ty: &dyn ToTokens) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("& ", "&"),
        ("' ", "'"),
    ] {
        text = text.replace(from, to);
    }
    text
}

fn unsupported(ty: &dyn ToTokens, why: &str) -> syn::Error {
    let text = display(ty);
    syn::Error::new_spanned(
        ty,
        format!("unsupported parameter type `{text}`: {why}\n({SUPPORTED})"),
    )
}

/// Strips `( )` and invisible groups around a type.
pub(crate) fn peel(ty: &Type) -> &Type {
    match ty {
        Type::Paren(p) => peel(&p.elem),
        Type::Group(g) => peel(&g.elem),
        other => other,
    }
}

/// The last segment's name and its type arguments, for a plain path type.
pub(crate) fn last_segment(ty: &Type) -> Option<(String, Vec<&Type>, &TypePath)> {
    let Type::Path(path) = peel(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let segment = path.path.segments.last()?;
    let args = match &segment.arguments {
        PathArguments::None => Vec::new(),
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        PathArguments::Parenthesized(_) => return None,
    };
    Some((segment.ident.to_string(), args, path))
}

fn is_unit(ty: &Type) -> bool {
    matches!(peel(ty), Type::Tuple(t) if t.elems.is_empty())
}

fn is_u8(ty: &Type) -> bool {
    matches!(last_segment(ty), Some((name, args, p)) if name == "u8" && args.is_empty() && p.path.segments.len() == 1)
}

fn plain_scalar(name: &str) -> Option<Scalar> {
    Some(match name {
        "f64" => Scalar::Double,
        "f32" => Scalar::Float,
        "i32" => Scalar::Int32,
        "i64" => Scalar::Int64,
        "u32" => Scalar::Uint32,
        "u64" => Scalar::Uint64,
        "bool" => Scalar::Bool,
        "String" => Scalar::String,
        "Bytes" => Scalar::BytesBuf,
        _ => return None,
    })
}

/// Classifies a parameter type.
pub(crate) fn classify_param(ty: &Type, options: &ParamOptions) -> syn::Result<FieldType> {
    let field = classify_shape(ty, options)?;
    apply_scalar_override(field, ty, options)
}

fn classify_shape(ty: &Type, options: &ParamOptions) -> syn::Result<FieldType> {
    if let Some((name, args, _)) = last_segment(ty) {
        match (name.as_str(), args.as_slice()) {
            ("Vec", [inner]) if !is_u8(inner) => {
                let elem = classify_elem(inner, options, "a repeated field's element")?;
                return Ok(FieldType {
                    shape: Shape::Repeated,
                    elem,
                });
            }
            ("Option", [inner]) => {
                let elem = classify_elem(inner, options, "an optional field's value")?;
                return Ok(FieldType {
                    shape: Shape::Optional,
                    elem,
                });
            }
            ("HashMap" | "BTreeMap", [key, value]) => {
                let key_elem = classify_elem(key, &ParamOptions::default(), "a map key")?;
                let key_scalar = match key_elem {
                    Elem::Scalar(s) if s.is_map_key() => s,
                    _ => {
                        return Err(unsupported(
                            *key,
                            "a protobuf map key is an integer, bool or String",
                        ));
                    }
                };
                let elem = classify_elem(value, options, "a map value")?;
                if matches!(elem, Elem::Scalar(Scalar::BytesBuf)) {
                    return Err(unsupported(
                        *value,
                        "prost maps hold bytes as Vec<u8>; use Vec<u8>",
                    ));
                }
                return Ok(FieldType {
                    shape: Shape::Map {
                        btree: name == "BTreeMap",
                        key: key_scalar,
                        key_ty: Box::new((*key).clone()),
                    },
                    elem,
                });
            }
            _ => {}
        }
    }
    let elem = classify_elem(ty, options, "a parameter")?;
    Ok(FieldType {
        shape: Shape::Single,
        elem,
    })
}

/// Classifies an element type: a scalar, bytes, a message or an enum.
fn classify_elem(ty: &Type, options: &ParamOptions, role: &str) -> syn::Result<Elem> {
    let peeled = peel(ty);
    if is_unit(peeled) {
        if options.enumeration.is_some() {
            return Err(unsupported(ty, "`()` is not a prost enum"));
        }
        return Ok(Elem::Message {
            proto: EMPTY.to_owned(),
        });
    }
    match peeled {
        Type::Reference(_) => {
            return Err(unsupported(
                ty,
                "a reference cannot cross the network; take an owned type \
                 (`String` for `&str`, `Vec<T>` for `&[T]`)",
            ));
        }
        Type::Tuple(_) => {
            return Err(unsupported(
                ty,
                "a tuple has no protobuf form; use separate parameters or a prost message",
            ));
        }
        Type::Array(_) | Type::Slice(_) => {
            return Err(unsupported(ty, "use `Vec<T>` for a repeated field"));
        }
        Type::ImplTrait(_) | Type::TraitObject(_) => {
            return Err(unsupported(
                ty,
                "a parameter needs one concrete type; use a prost message",
            ));
        }
        Type::Path(_) => {}
        _ => return Err(unsupported(ty, "this type has no protobuf form")),
    }
    let Some((name, args, path)) = last_segment(peeled) else {
        return Err(unsupported(ty, "qualified paths are not supported"));
    };
    if let ("Vec", [inner]) = (name.as_str(), args.as_slice()) {
        if is_u8(inner) {
            if options.enumeration.is_some() {
                return Err(unsupported(ty, "`Vec<u8>` is bytes, not a prost enum"));
            }
            return Ok(Elem::Scalar(Scalar::BytesVec));
        }
    }
    if let Some(scalar) = plain_scalar(&name).filter(|_| args.is_empty()) {
        if let Some(span) = options.enumeration {
            return Err(syn::Error::new(
                span,
                format!("`enumeration` marks a prost enum parameter, not `{name}`"),
            ));
        }
        return Ok(Elem::Scalar(scalar));
    }
    match name.as_str() {
        "Vec" | "Option" | "HashMap" | "BTreeMap" => {
            return Err(unsupported(
                ty,
                &format!("{role} cannot itself be a `{name}` in protobuf"),
            ));
        }
        "u8" | "u16" => {
            return Err(unsupported(
                ty,
                "protobuf has no 8- or 16-bit integers; use `u32`",
            ));
        }
        "i8" | "i16" => {
            return Err(unsupported(
                ty,
                "protobuf has no 8- or 16-bit integers; use `i32`",
            ));
        }
        "usize" | "u128" => return Err(unsupported(ty, "use `u64` (or `u32`)")),
        "isize" | "i128" => return Err(unsupported(ty, "use `i64` (or `i32`)")),
        "char" => return Err(unsupported(ty, "use `String`")),
        "str" => return Err(unsupported(ty, "use `String`")),
        "Box" | "Rc" | "Arc" | "Cow" => {
            return Err(unsupported(ty, "take the value itself"));
        }
        "HashSet" | "BTreeSet" | "VecDeque" | "LinkedList" => {
            return Err(unsupported(ty, "use `Vec<T>` for a repeated field"));
        }
        "Result" => return Err(unsupported(ty, "a `Result` has no protobuf form")),
        _ => {}
    }
    if !args.is_empty() || path.path.segments.iter().any(|s| !s.arguments.is_empty()) {
        return Err(unsupported(
            ty,
            "a generic type has no protobuf form; prost messages are not generic",
        ));
    }
    if options.enumeration.is_some() {
        Ok(Elem::Enum {
            ty: Box::new(peeled.clone()),
            proto: name,
        })
    } else {
        Ok(Elem::Message { proto: name })
    }
}

fn apply_scalar_override(
    mut field: FieldType,
    ty: &Type,
    options: &ParamOptions,
) -> syn::Result<FieldType> {
    let Some((wanted, span)) = options.scalar else {
        return Ok(field);
    };
    if matches!(field.shape, Shape::Map { .. }) {
        return Err(syn::Error::new(
            span,
            "encoding overrides are not supported on map fields",
        ));
    }
    let base = match &field.elem {
        Elem::Scalar(s) => *s,
        _ => {
            return Err(syn::Error::new(
                span,
                format!(
                    "`{}` applies to an integer parameter, not `{}`",
                    wanted.prost_name(),
                    display(ty)
                ),
            ));
        }
    };
    let fits = matches!(
        (base, wanted),
        (
            Scalar::Int32,
            Scalar::Sint32 | Scalar::Sfixed32 | Scalar::Int32
        ) | (
            Scalar::Int64,
            Scalar::Sint64 | Scalar::Sfixed64 | Scalar::Int64
        ) | (Scalar::Uint32, Scalar::Fixed32 | Scalar::Uint32)
            | (Scalar::Uint64, Scalar::Fixed64 | Scalar::Uint64)
    );
    if !fits {
        let rust = match wanted {
            Scalar::Sint32 | Scalar::Sfixed32 => "i32",
            Scalar::Sint64 | Scalar::Sfixed64 => "i64",
            Scalar::Fixed32 => "u32",
            _ => "u64",
        };
        return Err(syn::Error::new(
            span,
            format!(
                "`{}` encodes a Rust `{rust}`, but this parameter is `{}`",
                wanted.prost_name(),
                display(ty)
            ),
        ));
    }
    field.elem = Elem::Scalar(wanted);
    Ok(field)
}

/// What a method returns inside `runar::Result<T>`.
#[derive(Clone)]
pub(crate) enum ReturnKind {
    /// A Rust type prost encodes as a `google.protobuf` wrapper (`f64`, `String`, ...) or
    /// `Empty` (`()`): the protobuf type name.
    WellKnown(&'static str),
    /// A prost message: its protobuf type name (the last path segment).
    Message(String),
}

/// Classifies the `T` of `runar::Result<T>`.
pub(crate) fn classify_return(ty: &Type) -> syn::Result<ReturnKind> {
    let hint = "return a prost message, f64, f32, i32, i64, u32, u64, bool, String, Vec<u8>, \
                Bytes or (); wrap anything else in a prost message";
    if is_unit(ty) {
        return Ok(ReturnKind::WellKnown(EMPTY));
    }
    let field = classify_param(ty, &ParamOptions::default()).map_err(|_| {
        syn::Error::new_spanned(
            ty,
            format!("unsupported return type `{}`: {hint}", display(ty)),
        )
    })?;
    match (&field.shape, &field.elem) {
        (Shape::Single, Elem::Scalar(s)) => match s.wrapper() {
            Some(name) => Ok(ReturnKind::WellKnown(name)),
            None => Err(syn::Error::new(ty.span(), hint)),
        },
        (Shape::Single, Elem::Message { proto }) => Ok(ReturnKind::Message(proto.clone())),
        _ => Err(syn::Error::new_spanned(
            ty,
            format!("unsupported return type `{}`: {hint}", display(ty)),
        )),
    }
}
