#[runar::service(path = "math")]
trait Math {
    async fn add(&self, a: f64, b: f64) -> f64;
    async fn many(&self) -> runar::Result<Vec<f64>>;
    async fn nothing(&self);
}

fn main() {}
