struct Calc;

#[runar::service(path = "calc")]
impl Calc {
    #[action]
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }
}

fn main() {}
