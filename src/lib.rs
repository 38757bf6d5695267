
pub mod pipeline;
