use crate::error::Error;
use crate::report::Outcome;
use crate::scenarios::Ctx;
pub(crate) async fn multi_process(_ctx: &mut Ctx) -> Result<Outcome, Error> { Ok(Outcome::broken("multi_process", "todo")) }
