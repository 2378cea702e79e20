//! The one integration-test binary of the workspace.

mod kernels;
mod learning;
mod loss;
mod model;
mod prompt;
