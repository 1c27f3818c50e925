//! What both front ends emit for a labelled field (sealed fields, `runar::seal`): the rules a
//! label follows and the marker type whose constants the envelope's associated data binds.

use proc_macro2::{Ident, TokenStream};
use quote::{ToTokens, quote};

/// The longest label (the envelope's limit).
pub const MAX_LABEL_LEN: usize = 64;

/// Why `label` is not a label (1 to [`MAX_LABEL_LEN`] characters `a-z 0-9 _ - .`), if it is not.
pub fn label_problem(label: &str) -> Option<String> {
    let valid = !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    (!valid)
        .then(|| format!("label `{label}` is not 1 to {MAX_LABEL_LEN} characters `a-z 0-9 _ - .`"))
}

/// The marker type of field `field_name` (`number`) of message `message` labelled `label`:
/// a hidden unit struct implementing `<krate>::codegen::SealedField`.
pub fn sealed_marker(
    vis: &impl ToTokens,
    marker: &Ident,
    krate: &impl ToTokens,
    message: &str,
    field_name: &str,
    number: u32,
    label: &str,
) -> TokenStream {
    let doc = format!("Field `{field_name}` ({number}) of `{message}`, label `{label}`.");
    quote! {
        #[doc = #doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #marker;
        impl #krate::codegen::SealedField for #marker {
            const MESSAGE: &'static str = #message;
            const FIELD: u32 = #number;
            const LABEL: &'static str = #label;
        }
    }
}

/// `T` of a field typed `Option<T>` (the last path segment named `Option`, as prost and
/// hand-written messages spell it); `None` for any other type.
pub fn option_inner(ty: &syn::Type) -> Option<syn::Type> {
    let syn::Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_envelope_rules() {
        assert_eq!(label_problem("user"), None);
        assert_eq!(label_problem("ops.billing-2_x"), None);
        assert!(label_problem("").is_some());
        assert!(label_problem("User").is_some());
        assert!(label_problem(&"a".repeat(MAX_LABEL_LEN + 1)).is_some());
        assert_eq!(label_problem(&"a".repeat(MAX_LABEL_LEN)), None);
    }

    #[test]
    fn option_inner_takes_the_type_out_of_an_option_however_spelled() {
        let inner = |t: &str| {
            syn::parse_str(t)
                .ok()
                .and_then(|t| super::option_inner(&t))
                .map(|t| quote::quote!(#t).to_string())
        };
        assert_eq!(inner("Option<Foo>").as_deref(), Some("Foo"));
        assert_eq!(
            inner("::core::option::Option<a::B>").as_deref(),
            Some("a :: B")
        );
        assert_eq!(inner("Vec<Foo>"), None);
        assert_eq!(inner("(u8, u8)"), None);
    }
}
