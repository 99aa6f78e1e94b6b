// SPDX-License-Identifier: Apache-2.0
// /usr/bin/meshwarp in the OCI image, which has no shell for bin/meshwarp (a bash script):
// runs the CLI with the image's Node.js, arguments passed on unchanged.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char **args = calloc((size_t)argc + 3, sizeof(char *));
	if (!args) return 127;
	args[0] = "/usr/bin/node";
	args[1] = "--disable-warning=ExperimentalWarning";
	args[2] = "/usr/lib/meshwarp/build/js/main.js"; /* make js: no TypeScript stripper in memory */
	for (int i = 1; i < argc; i++) args[i + 2] = argv[i];
	execv(args[0], args);
	perror("meshwarp: exec /usr/bin/node");
	return 127;
}
