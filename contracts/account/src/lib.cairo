mod account;
mod udc;
