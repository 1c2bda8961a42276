/* The subcommands of `ferry`, each returning the process exit status. */
#ifndef FERRY_CMD_H
#define FERRY_CMD_H

int mount_main(int argc, char **argv); /* ferry mount; also mount.ferry after translation */
int umount_main(int argc, char **argv);
int stat_main(int argc, char **argv);
int warm_main(int argc, char **argv);
int manifest_main(int argc, char **argv);
int fluid_mount_main(int argc, char **argv); /* mount/fluid.c */

#endif
