// A method returns `runar::Result<T>`, whose error is `runar::Error`.
#[runar::service(path = "math")]
pub trait Math {
    async fn add(&self, a: i64, b: i64) -> Result<i64, String>;
    async fn sub(&self, a: i64, b: i64) -> i64;
}

fn main() {}
