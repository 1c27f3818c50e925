// A type that is not a prost message, where a payload is needed (a `#[runar::service]` parameter
// or return type, `node.request`, `node.publish`): one headline naming the type and what to use
// instead. The bound is written here so the expected output does not quote runtime sources.
pub struct Plain {
    pub x: i64,
}

fn send<T: runar::Payload>(_message: T) {}

fn main() {
    send(Plain { x: 1 });
}
