#[derive(Clone)]
struct Calc;

#[runar::service(path = "calc")]
impl Calc {
    #[action]
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }

    #[action("add")]
    async fn add_again(&self, a: f64, b: f64) -> runar::Result<f64> {
        Ok(a + b)
    }
}

fn main() {}
