use crate::error::Error;
use crate::report::Outcome;
use crate::scenarios::Ctx;
pub(crate) async fn hostile_bodies(_ctx: &mut Ctx) -> Result<Outcome, Error> { Ok(Outcome::broken("hostile_bodies", "todo")) }
