//! The naming rules both code generators follow: one case conversion (heck's), and the names of
//! the generated items.

use heck::{ToLowerCamelCase, ToSnakeCase, ToUpperCamelCase};
use proc_macro2::Ident;
use quote::format_ident;

/// The names the generated client takes for itself; no action may generate a client method of
/// one of these names.
pub const CLIENT_RESERVED: &[&str] = &[
    "new",
    "with_timeout",
    "with_wait_for_ready",
    "with_metadata",
    "with_interceptor",
    "node",
];

/// `GetItem` → `get_item`, `ItemCatalog` → `item_catalog`, `HTTPServer` → `http_server`: service
/// paths, action and event names, module names.
pub fn snake_case(name: &str) -> String {
    name.to_snake_case()
}

/// `get_item` → `GetItem`: the rpc of an action, the messages named after it.
pub fn upper_camel_case(name: &str) -> String {
    name.to_upper_camel_case()
}

/// `get_item_id` → `getItemId`: a field's JSON name in a schema.
pub fn lower_camel_case(name: &str) -> String {
    name.to_lower_camel_case()
}

/// Whether `name` is a snake_case action name: non-empty, and unchanged by a round trip
/// through the rpc name (`get_item` ↔ `GetItem`), so the action and its rpc map both ways.
pub fn is_snake_case(name: &str) -> bool {
    !name.is_empty() && snake_case(&upper_camel_case(name)) == name
}

/// `MathServer` for the service `Math`: the wrapper that hosts an implementation.
pub fn server_ident(service: &str) -> Ident {
    format_ident!("{}Server", service)
}

/// `MathClient` for the service `Math`: the typed client.
pub fn client_ident(service: &str) -> Ident {
    format_ident!("{}Client", service)
}

/// `item_catalog_server` for the service `ItemCatalog`: the .proto path's server module.
pub fn server_module(service: &str) -> String {
    format!("{}_server", snake_case(service))
}

/// `item_catalog_client` for the service `ItemCatalog`: the .proto path's client module.
pub fn client_module(service: &str) -> String {
    format!("{}_client", snake_case(service))
}

/// `publish_stock_changed` for the event `stock_changed`.
pub fn publish_method(event: &str) -> String {
    format!("publish_{event}")
}

/// `subscribe_stock_changed` for the event `stock_changed`.
pub fn subscribe_method(event: &str) -> String {
    format!("subscribe_{event}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_conversions() {
        assert_eq!(snake_case("Math"), "math");
        assert_eq!(snake_case("MathService"), "math_service");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("ItemCatalog"), "item_catalog");
        assert_eq!(snake_case("Calc2Go"), "calc2_go");
        assert_eq!(snake_case("GetItem"), "get_item");
        assert_eq!(upper_camel_case("get_item"), "GetItem");
        assert_eq!(upper_camel_case("add2"), "Add2");
        assert_eq!(lower_camel_case("get_item_id"), "getItemId");
        assert_eq!(lower_camel_case("id"), "id");
    }

    #[test]
    fn action_names_round_trip_through_the_rpc_name() {
        for ok in ["add", "get_item", "add2", "plus"] {
            assert!(is_snake_case(ok), "{ok}");
        }
        for bad in [
            "",
            "Add",
            "get__item",
            "item_",
            "_item",
            "item_2",
            "getItem",
        ] {
            assert!(!is_snake_case(bad), "{bad}");
        }
    }

    #[test]
    fn generated_names() {
        assert_eq!(server_ident("Math").to_string(), "MathServer");
        assert_eq!(client_ident("Math").to_string(), "MathClient");
        assert_eq!(server_module("ItemCatalog"), "item_catalog_server");
        assert_eq!(client_module("ItemCatalog"), "item_catalog_client");
        assert_eq!(publish_method("changed"), "publish_changed");
        assert_eq!(subscribe_method("changed"), "subscribe_changed");
    }
}
