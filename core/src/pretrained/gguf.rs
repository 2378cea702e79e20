//! GGUF (llama.cpp) files of Llama-family decoders. (In progress.)
