#[runar::service(path = "math")]
trait Math {
    fn add(&self, a: f64, b: f64) -> runar::Result<f64>;
}

fn main() {}
