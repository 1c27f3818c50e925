//! The code `#[runar::service]` generates names only `::runar::codegen`, `::core` and `::std`,
//! and its local variables cannot clash with parameter names: it compiles with no prelude and
//! with `Result`, `Option`, `Box`, `std`, `core` and `runar` shadowed.
#![no_implicit_prelude]
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::too_many_arguments
)]

#[allow(unused_extern_crates)]
extern crate runar as some_random_other_name;

// Shadow what generated code could carelessly name.
struct Result;
struct Option;
struct Box;
struct Vec;
struct String;
struct Arc;
struct Send;
struct Sync;
struct Clone;
struct Default;
struct Future;
struct T;
mod std {}
mod core {}
mod runar {}
mod prost {}

#[derive(
    ::core::clone::Clone,
    ::core::marker::Copy,
    ::core::fmt::Debug,
    ::core::cmp::PartialEq,
    ::core::cmp::Eq,
    ::core::hash::Hash,
    ::core::cmp::PartialOrd,
    ::core::cmp::Ord,
    ::runar::prost::Enumeration,
)]
#[prost(prost_path = "::runar::prost")]
#[repr(i32)]
pub enum Level {
    Low = 0,
    High = 1,
}

#[derive(::core::clone::Clone, ::core::cmp::PartialEq, ::runar::prost::Message)]
#[prost(prost_path = "::runar::prost")]
pub struct Point {
    #[prost(int32, tag = "1")]
    pub x: i32,
}

/// A trait service.
#[::runar::service(path = "hygiene")]
pub trait Hygiene {
    async fn add(&self, a: f64, b: f64) -> ::runar::Result<f64>;

    async fn point(&self, p: Point) -> ::runar::Result<Point>;

    /// Parameter names that a careless generator would use for its own variables.
    async fn clash(
        &self,
        request: f64,
        context: f64,
        service: f64,
        ctx: f64,
        arg0: f64,
        out: f64,
        #[runar(enumeration)] raw: ::std::vec::Vec<Level>,
        #[runar(enumeration)] value: ::core::option::Option<Level>,
        #[runar(enumeration)] key: ::std::collections::HashMap<::std::string::String, Level>,
    ) -> ::runar::Result<f64>;

    #[subscribe("hygiene/ticks")]
    async fn on_tick(&self, request: u64, service: u64) -> ::runar::Result<()>;

    /// Streams, with parameter names the stream adapters use for their own variables.
    async fn chat(
        &self,
        requests: ::runar::Streaming<Point>,
    ) -> ::runar::Result<
        impl ::runar::Stream<Item = ::runar::Result<Point>> + ::core::marker::Send + 'static,
    >;

    async fn watch(
        &self,
        responses: i32,
        response: i32,
    ) -> ::runar::Result<
        impl ::runar::Stream<Item = ::runar::Result<Point>> + ::core::marker::Send + 'static,
    >;

    async fn gather(
        &self,
        context: ::runar::RequestContext,
        request: ::runar::Streaming<i32>,
    ) -> ::runar::Result<i32>;
}

struct Impl;

impl Hygiene for Impl {
    async fn add(&self, a: f64, b: f64) -> ::runar::Result<f64> {
        ::core::result::Result::Ok(a + b)
    }

    async fn point(&self, p: Point) -> ::runar::Result<Point> {
        ::core::result::Result::Ok(p)
    }

    async fn clash(
        &self,
        request: f64,
        context: f64,
        service: f64,
        ctx: f64,
        arg0: f64,
        out: f64,
        raw: ::std::vec::Vec<Level>,
        value: ::core::option::Option<Level>,
        key: ::std::collections::HashMap<::std::string::String, Level>,
    ) -> ::runar::Result<f64> {
        let enums = (raw.len() + value.map_or(0, |_| 1) + key.len()) as f64;
        ::core::result::Result::Ok(request + context + service + ctx + arg0 + out + enums)
    }

    async fn on_tick(&self, request: u64, service: u64) -> ::runar::Result<()> {
        let _ = (request, service);
        ::core::result::Result::Ok(())
    }

    async fn chat(
        &self,
        requests: ::runar::Streaming<Point>,
    ) -> ::runar::Result<
        impl ::runar::Stream<Item = ::runar::Result<Point>> + ::core::marker::Send + 'static,
    > {
        ::core::result::Result::Ok(requests)
    }

    async fn watch(
        &self,
        responses: i32,
        response: i32,
    ) -> ::runar::Result<
        impl ::runar::Stream<Item = ::runar::Result<Point>> + ::core::marker::Send + 'static,
    > {
        ::core::result::Result::Ok(::futures::stream::iter([
            ::core::result::Result::Ok(Point { x: responses }),
            ::core::result::Result::Ok(Point { x: response }),
        ]))
    }

    async fn gather(
        &self,
        context: ::runar::RequestContext,
        mut request: ::runar::Streaming<i32>,
    ) -> ::runar::Result<i32> {
        let _ = context;
        let mut sum = 0;
        while let ::core::option::Option::Some(x) = request.message().await? {
            sum += x;
        }
        ::core::result::Result::Ok(sum)
    }
}

#[derive(::core::clone::Clone)]
struct Counter;

/// An impl-block service.
#[::runar::service(path = "counter")]
impl Counter {
    #[action]
    async fn twice(
        &self,
        request: ::std::string::String,
        service: ::core::option::Option<u32>,
    ) -> ::runar::Result<::std::string::String> {
        let n = service.unwrap_or(2) as usize;
        ::core::result::Result::Ok(request.repeat(n))
    }

    #[action]
    async fn nothing(&self) -> ::runar::Result<()> {
        ::core::result::Result::Ok(())
    }

    #[subscribe("hygiene/events")]
    async fn on_event(&self, ctx: ::runar::EventContext, x: i64) -> ::runar::Result<()> {
        let _ = (ctx, x);
        ::core::result::Result::Ok(())
    }
}

#[::core::prelude::v1::test]
fn generated_code_is_hygienic() {
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = ::runar::Node::new(::runar::NodeConfig::new("n", "test"))
            .await
            .unwrap();
        node.add_service(HygieneServer::new(Impl)).await.unwrap();
        node.add_service(Counter).await.unwrap();
        node.start().await.unwrap();

        let client = HygieneClient::new(::core::clone::Clone::clone(&node));
        ::core::assert_eq!(client.add(1.0, 2.0).await.unwrap(), 3.0);
        ::core::assert_eq!(client.point(Point { x: 4 }).await.unwrap().x, 4);
        let mut key = ::std::collections::HashMap::new();
        key.insert(::std::borrow::ToOwned::to_owned("k"), Level::High);
        let sum = client
            .clash(
                1.0,
                2.0,
                3.0,
                4.0,
                5.0,
                6.0,
                ::std::vec![Level::Low],
                ::core::option::Option::Some(Level::High),
                key,
            )
            .await
            .unwrap();
        ::core::assert_eq!(sum, 24.0);

        let points = ::futures::stream::iter([Point { x: 1 }, Point { x: 2 }]);
        let mut echoed = client.chat(points).await.unwrap();
        ::core::assert_eq!(
            echoed.message().await.unwrap(),
            ::core::option::Option::Some(Point { x: 1 })
        );
        ::core::assert_eq!(
            echoed.message().await.unwrap(),
            ::core::option::Option::Some(Point { x: 2 })
        );
        ::core::assert_eq!(
            echoed.message().await.unwrap(),
            ::core::option::Option::None
        );
        let mut watched = client.watch(5, 6).await.unwrap();
        ::core::assert_eq!(
            watched.message().await.unwrap(),
            ::core::option::Option::Some(Point { x: 5 })
        );
        ::core::assert_eq!(
            watched.message().await.unwrap(),
            ::core::option::Option::Some(Point { x: 6 })
        );
        ::core::assert_eq!(
            watched.message().await.unwrap(),
            ::core::option::Option::None
        );
        let total = client
            .gather(::futures::stream::iter([1, 2, 3]))
            .await
            .unwrap();
        ::core::assert_eq!(total, 6);

        let counter = CounterClient::new(::core::clone::Clone::clone(&node));
        ::core::assert_eq!(
            counter
                .twice(
                    ::std::borrow::ToOwned::to_owned("ab"),
                    ::core::option::Option::None
                )
                .await
                .unwrap(),
            "abab"
        );
        counter.nothing().await.unwrap();
        node.stop().await.unwrap();
    });
}
