/* run.h — the job pipeline behind `lorabatch run | plan | status`:
 * job file -> validation -> plan -> engine -> ordered zstd outputs + checkpoints. */
#ifndef LB_RUN_H
#define LB_RUN_H

int lb_cmd_run(int argc, char **argv);
int lb_cmd_plan(int argc, char **argv);
int lb_cmd_status(int argc, char **argv);

#endif
