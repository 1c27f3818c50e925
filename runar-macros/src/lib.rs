//! Runar's procedural macros: [`#[runar::service]`](macro@service), the code-first way to write
//! a Runar service. Use them through the `runar` crate.
//!
//! See [`service`] for what the macro generates and for the wire format rules.

mod args;
mod descriptor;
mod generator;
mod model;
mod schema;
mod sealed;
mod types;

use proc_macro::TokenStream;
use quote::ToTokens;

use crate::args::ServiceArgs;
use crate::generator::ServiceGenerator;
use crate::model::{Errors, Service};

/// Turns a trait or an inherent impl block into a Runar service with a typed client and a
/// protobuf schema.
///
/// # On a trait
///
/// ```ignore
/// #[runar::service(path = "math")]
/// pub trait Math {
///     async fn add(&self, a: f64, b: f64) -> runar::Result<f64>;
///     async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply>;
/// }
///
/// struct MyMath;
/// impl Math for MyMath {
///     async fn add(&self, a: f64, b: f64) -> runar::Result<f64> { Ok(a + b) }
///     async fn stats(&self, req: StatsRequest) -> runar::Result<StatsReply> { todo!() }
/// }
///
/// node.add_service(MathServer::new(MyMath)).await?;
/// let client = MathClient::new(node.clone());
/// assert_eq!(client.add(1.0, 2.0).await?, 3.0);
/// ```
///
/// generates:
/// - the trait itself, with each `async fn` rewritten to
///   `fn add(&self, a: f64, b: f64) -> impl Future<Output = runar::Result<f64>> + Send` and
///   `Send + Sync + 'static` supertraits, so that implementations keep writing plain `async fn`
///   while the futures are `Send`;
/// - `MathServer<T: Math>` (`new(T)`, `from_arc(Arc<T>)`, `get_ref()`), a
///   `runar::AbstractService` whose `init` registers one action per method (`math/add`,
///   `math/stats`);
/// - `MathClient` (`Clone`; `new(node)`, `with_timeout(Duration)`, `with_wait_for_ready(bool)`,
///   `with_metadata(Metadata)`, `with_interceptor(impl Interceptor)`, `node()`), with one
///   `&self` async method per action taking the same parameters:
///   `client.add(1.0, 2.0).await -> runar::Result<f64>`;
/// - one prost message per method whose parameters need one (see below), named
///   `{Service}{Rpc}Request`, e.g. `MathAddRequest { a, b }`.
///
/// Every method of the trait is an action. `#[action("name")]` gives a method another action
/// name; `#[subscribe("topic")]` makes it a subscription instead (the server subscribes it).
/// A method may have a default body (`async fn f(&self) -> runar::Result<()> { .. }`).
///
/// # On an impl block
///
/// ```ignore
/// #[derive(Clone)]
/// struct Calc;
///
/// /// Adds numbers.
/// #[runar::service(path = "calc")]
/// impl Calc {
///     #[action]
///     async fn add(&self, a: f64, b: f64) -> runar::Result<f64> { Ok(a + b) }
///     #[action("plus")]
///     async fn add_again(&self, a: f64, b: f64) -> runar::Result<f64> { Ok(a + b) }
///     #[subscribe("math/computed")]
///     async fn on_computed(&self, v: f64) -> runar::Result<()> { Ok(()) }
///     fn helper(&self) {} // neither: left alone
/// }
///
/// node.add_service(Calc).await?;
/// let sum = CalcClient::new(node.clone()).add(1.0, 2.0).await?;
/// ```
///
/// generates `impl runar::AbstractService for Calc` and `CalcClient` (one method per
/// `#[action]`; subscriptions have no client method). The type must be
/// `Clone + Send + Sync + 'static`: each handler holds one clone of it, shared by its requests
/// (wrap state that all handlers must see in an `Arc`). Methods without `#[action]` or
/// `#[subscribe]` are left as they are. The description defaults to the impl block's docs.
///
/// # Arguments
///
/// | argument | default | meaning |
/// |---|---|---|
/// | `path = "math"` | snake_case of the trait or type name | the service path; actions are `path/action` |
/// | `name = "…"` | the trait or type name | `AbstractService::name` |
/// | `version = "…"` | the crate's `CARGO_PKG_VERSION` | `AbstractService::version` |
/// | `description = "…"` | the first paragraph of the item's `///` docs | `AbstractService::description` |
/// | `vis = "pub(crate)"` | the trait's visibility; `pub` for an impl block | visibility of the generated items |
/// | `crate = "::runar"` | `::runar` | where the `runar` crate is, if renamed |
///
/// # Methods
///
/// A handler is an `async fn` taking `&self`, not generic, returning `runar::Result<T>` (a bare
/// `T` or a `Result<T, E>` whose `E` is not `runar::Error`, such as `Result<i64, String>`, is a
/// compile error at the return type). It may
/// take a `runar::RequestContext` parameter (a `runar::EventContext` for a subscription) to see
/// the deadline, the caller and path parameters; the context is not part of the message and
/// the client method does not take it (a parameter is a context when the last segment of its
/// type is `RequestContext` or `EventContext`). Every other parameter is a protobuf field,
/// named by a plain identifier.
///
/// An action name is snake_case (`get_item`; it maps to the rpc `GetItem` and back) and unique
/// in the service. The client's own methods `new`, `with_timeout`, `with_wait_for_ready`,
/// `with_metadata`, `with_interceptor` and `node` cannot be action method names (rename the method, keep the action name with `#[action("new")]`).
///
/// `#[allow(..)]` on a method is repeated on its client method; `#[cfg(..)]` applies to its
/// handler, client method and message, but the schema, built when the macro expands, still
/// lists the rpc.
///
/// # Streaming actions
///
/// ```ignore
/// #[runar::service(path = "stock")]
/// pub trait Stock {
///     // server streaming: one request, a stream of responses
///     async fn watch(&self, id: u64)
///         -> runar::Result<impl runar::Stream<Item = runar::Result<StockChanged>> + Send + 'static>;
///     // client streaming: a stream of requests, one response
///     async fn restock(&self, ctx: runar::RequestContext, items: runar::Streaming<RestockItem>)
///         -> runar::Result<RestockSummary>;
///     // bidirectional
///     async fn haggle(&self, offers: runar::Streaming<Offer>)
///         -> runar::Result<impl runar::Stream<Item = runar::Result<Offer>> + Send + 'static>;
/// }
/// let mut changes = client.watch(7).await?;            // runar::Streaming<StockChanged>
/// while let Some(change) = changes.message().await? { /* … */ }
/// let summary = client.restock(futures::stream::iter(items)).await?;
/// ```
///
/// A parameter of type `runar::Streaming<T>` (recognized by the last segment, `Streaming`)
/// makes the action stream its requests; it is then the action's only parameter besides the
/// context, and the client method takes any `impl Stream<Item = T> + Send + 'static` in its
/// place. A return of `runar::Result<impl runar::Stream<Item = runar::Result<T>> + Send +
/// 'static>` makes it stream its responses; the client method returns
/// `runar::Result<runar::Streaming<T>>` as soon as the call is started, and dropping that
/// `Streaming` cancels the call. Each message of a stream is a prost message, a scalar or `()`
/// (as a one-parameter request or a return value travels). The schema marks such an rpc
/// `stream`, so the client generated from the equivalent `.proto` calls it, and the reverse.
///
/// A subscription returns `runar::Result<()>`; its parameters form the event message by the
/// same rule as an action's request (one `f64` parameter receives an event published as
/// `node.publish("math/computed", 3.0f64)`).
///
/// # Wire format
///
/// A method's parameters (other than the context) become **one protobuf message**: field
/// number = the parameter's position (from 1), field name = the parameter's name. The same
/// message appears in the schema as `{Rpc}Request` (`AddRequest` for the action `add`).
/// The Rust value that travels is the cheapest one with exactly that encoding:
///
/// - **several parameters**, or one whose type is not itself a message (`Option`, `Vec<T>`,
///   maps, enums, `sint32`-style overrides): the generated struct (`MathAddRequest`);
/// - **exactly one parameter whose type is a prost message** (any path type not recognized
///   below): that message itself, unwrapped, so `async fn stats(&self, req: StatsRequest)`
///   is wire-identical to `rpc Stats(StatsRequest) returns (StatsReply)`;
/// - **exactly one scalar, `String` or bytes parameter**: the value itself. prost's own
///   `Message` impl for `f64`, `String`, … encodes it as field 1, exactly the one-field
///   request message, so `node.request("calc/double", 21.0f64)` works too;
/// - **no parameters**: `()`, the empty message.
///
/// The return value `T` of `runar::Result<T>` is sent as itself: a prost message as-is; `f64`,
/// `f32`, `i32`, `i64`, `u32`, `u64`, `bool`, `String`, `Vec<u8>` and `Bytes` through prost's
/// `Message` impls, i.e. as a one-field message (`google.protobuf.DoubleValue`, …); `()` as
/// `google.protobuf.Empty`.
///
/// Parameter types, recognized by the last segment of their path:
///
/// | Rust | protobuf |
/// |---|---|
/// | `f64`, `f32`, `i32`, `i64`, `u32`, `u64`, `bool` | `double`, `float`, `int32`, `int64`, `uint32`, `uint64`, `bool` |
/// | `#[runar(sint32)] i32` (also `sint64`, `sfixed32`, `sfixed64`, `fixed32`, `fixed64`) | that encoding |
/// | `String` | `string` |
/// | `Vec<u8>`, `Bytes` | `bytes` |
/// | `Option<T>` | proto3 `optional T` (a plain field for a message `T`) |
/// | `Vec<T>` | `repeated T` |
/// | `HashMap<K, V>`, `BTreeMap<K, V>` | `map<K, V>` (integer, `bool` or `String` keys) |
/// | `#[runar(enumeration)] E` (also `Option<E>`, `Vec<E>`, map values) | the prost enum `E` (an `int32` on the wire; the generated message holds an `i32`); an unknown value fails the request with `InvalidArgument` |
/// | `()` | `google.protobuf.Empty` |
/// | any other path type without generic arguments | a prost message |
///
/// A prost enum cannot be told from a message by its name, hence `#[runar(enumeration)]`; the
/// parameter keeps its enum type and the generated code converts. Anything else (references,
/// tuples, arrays, slices, `impl Trait`, `Box`, generic types, 8- and 16-bit integers, `usize`,
/// `Option<Vec<T>>`, `Vec<Vec<T>>`) is a compile error at the parameter's type.
///
/// # Hygiene
///
/// Generated code names only `::runar::codegen::*`, `::core` and `::std` (never the prelude), and
/// its local variables cannot collide with parameter names. The user's crate needs no direct
/// `prost` dependency: the messages derive `::runar::codegen::prost::Message` with
/// `#[prost(prost_path = "::runar::codegen::prost")]`.
///
/// # Schema
///
/// `AbstractService::schema()` returns an encoded `google.protobuf.FileDescriptorProto`, built
/// while the macro expands: `syntax = "proto3"`, package = the service path (`/` becomes `.`),
/// one message per request described above, and a service named after the trait or type with
/// one rpc per action (`Add` for `add`). A user's message or enum is named by the last segment
/// of its Rust path, unqualified (`StatsRequest`): the file references it without defining it.
/// Subscriptions consume other services' events and are not part of the schema.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr.into(), item.into()).into()
}

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let args = match ServiceArgs::parse(attr) {
        Ok(args) => args,
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            return out;
        }
    };
    let mut errors = Errors::default();
    let service = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Trait(t)) => Service::from_trait(args, t, &mut errors),
        Ok(syn::Item::Impl(i)) => Service::from_impl(args, i, &mut errors),
        Ok(other) => {
            let mut out = syn::Error::new_spanned(
                &other,
                "`#[runar::service]` goes on a trait or on an inherent impl block",
            )
            .to_compile_error();
            out.extend(item);
            return out;
        }
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            return out;
        }
    };
    let generator = ServiceGenerator::new(&service);
    match errors.into_result() {
        Ok(()) => generator.into_token_stream(),
        Err(e) => {
            // Report every error, and keep the item (without the helper attributes) so the
            // rest of the crate still resolves its names.
            let mut out = e.to_compile_error();
            out.extend(generator.item());
            out
        }
    }
}

/// Labelled (sealed) fields on a hand-written prost message: the code-first twin of
/// `[(runar.label) = "user"]` in a `.proto`.
///
/// Put it above `#[derive(prost::Message)]` and mark fields with `#[runar(label = "...")]`:
///
/// ```ignore
/// #[runar::message(package = "vault")]
/// #[derive(Clone, PartialEq, runar::prost::Message)]
/// #[prost(prost_path = "::runar::prost")]
/// pub struct Record {
///     #[prost(string, tag = "1")]
///     pub id: String,
///     #[runar(label = "user")]
///     #[prost(string, tag = "2")]
///     pub name: String,                       // becomes Option<runar::Sealed<String, _>>
/// }
/// ```
///
/// Each labelled field becomes `Option<runar::codegen::Sealed<T, Marker>>` (for a message
/// field `#[prost(message, optional)] Option<M>`, `T` is `M`, which needs
/// `runar::codegen::sealed_message!(M);` once), exactly what `runar-build` generates for the
/// same field of a `.proto`, with the same wire format: a message sealed by one side opens on
/// the other when `package` and the struct's name make the `.proto` message's full name
/// (`vault.Record`). Without `package` the full name is the struct's name. A labelled field is
/// singular (not repeated, a map, `optional` or in a oneof); a label is 1 to 64 characters
/// `a-z 0-9 _ - .`. `crate = "..."` names the `runar` crate if it is not `::runar`.
#[proc_macro_attribute]
pub fn message(attr: TokenStream, item: TokenStream) -> TokenStream {
    sealed::expand(attr.into(), item.into())
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}
