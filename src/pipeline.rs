//! The request pipeline stages (the lead owns the stage order; this file only declares modules).

pub mod validate;
