use std::rc::Rc;

#[derive(Clone)]
struct Calc;

#[runar::service(path = "calc")]
impl Calc {
    #[action]
    async fn add(&self, a: f64, b: f64) -> runar::Result<f64> {
        let local = Rc::new(a);
        std::future::ready(()).await;
        Ok(*local + b)
    }
}

fn main() {}
