//! Hugging Face model folders (safetensors). (In progress.)
