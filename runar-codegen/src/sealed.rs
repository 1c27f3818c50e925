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
}
