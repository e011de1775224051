/*
 * The pod sandbox process of the test node (test/k8s/node.ts): it holds a pod's namespaces
 * and does nothing else until it is told to stop. As PID 1 of the pod it reaps the children
 * that get re-parented to it.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	signal(SIGINT, stop);
	signal(SIGTERM, stop);
	signal(SIGCHLD, reap);
	for (;;)
		pause();
}
