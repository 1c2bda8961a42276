/* train/: the GPT trainer's public entry point. */
#ifndef FERRY_TRAIN_H
#define FERRY_TRAIN_H

/* `ferry train ...`; returns the process exit status. */
int train_main(int argc, char **argv);

#endif
