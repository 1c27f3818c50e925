#[derive(Clone, Default)]
pub struct Plain {
    pub x: i32,
}

#[runar::service(path = "math")]
pub trait Math {
    async fn show(&self, p: Plain) -> runar::Result<String>;
    async fn make(&self, x: i32) -> runar::Result<Plain>;
}

fn main() {}
