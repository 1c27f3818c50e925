#[runar::service(path = "math")]
trait Math {
    async fn add<T>(&self, a: T, b: T) -> runar::Result<f64>;
}

fn main() {}
