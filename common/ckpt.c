/* placeholder: being written */
typedef int gpp__placeholder_ckpt;
