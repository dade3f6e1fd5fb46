static int unused_placeholder_ = 0; int pid_synth_placeholder(void){return unused_placeholder_;}
