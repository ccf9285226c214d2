/* The sandbox ("pause") container of every pod on the test cluster's nodes: it holds the pod's
 * namespaces, reaps the zombies of processes that get reparented to it (PID 1 of a shared PID
 * namespace) and exits on SIGINT/SIGTERM. Built locally (images/build.sh) because no registry is
 * reachable from the test machines. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (getpid() != 1) {
    /* Not an error: useful to run by hand; say why it may leave zombies behind. */
    fprintf(stderr, "pause: not PID 1, reparented zombies are not mine to reap\n");
  }
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
